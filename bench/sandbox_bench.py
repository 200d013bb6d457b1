#!/usr/bin/env python
"""Sandboxes (issue 15): create-to-first-output with a cached image, and `exec` round trip,
side by side with a plain `subprocess.run` of the same command, taking turns in one run.

    .venv/bin/python bench/sandbox_bench.py [--rounds 20] [--execs 200]

- create: `Sandbox.create("echo", "ready")` until its first line of stdout is read, the image
  cached (the first create builds it and is not counted); against `subprocess.run(["echo",
  "ready"])` reading its output.
- exec: `sb.exec("true").wait()` on a running sandbox; against `subprocess.run(["true"])`.

Uses a fresh KETCH_HOME (a server of its own) and removes it. Prints a table; results go to
bench/results/.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

from _common import save_result  # noqa: E402
from core import Ketch, pct  # noqa: E402


def _plain(argv: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(argv, capture_output=True, check=True)
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--rounds", type=int, default=20, help="sandboxes created")
    parser.add_argument("--execs", type=int, default=200, help="exec round trips")
    args = parser.parse_args()

    k = Ketch(False)
    try:
        import ketch

        app = ketch.App.lookup("sandbox-bench", create_if_missing=True)
        warm = ketch.Sandbox.create("echo", "warm", app=app)  # builds the image once
        next(iter(warm.stdout))
        warm.terminate()

        creates: list[float] = []
        plain_start: list[float] = []
        for _ in range(args.rounds):
            t0 = time.perf_counter()
            sb = ketch.Sandbox.create("echo", "ready", app=app)
            line = next(iter(sb.stdout))
            creates.append(time.perf_counter() - t0)
            assert line == "ready\n", line
            sb.terminate()
            plain_start.append(_plain(["echo", "ready"]))

        sb = ketch.Sandbox.create(app=app)
        execs: list[float] = []
        plain_exec: list[float] = []
        for _ in range(args.execs):
            t0 = time.perf_counter()
            code = sb.exec("true").wait()
            execs.append(time.perf_counter() - t0)
            assert code == 0
            plain_exec.append(_plain(["true"]))
        sb.terminate()
    finally:
        k.close()

    def row(name: str, ours: list[float], theirs: list[float]) -> dict[str, Any]:
        return {
            "measure": name,
            "sandbox_p50_ms": pct(ours, 50) * 1000,
            "sandbox_p99_ms": pct(ours, 99) * 1000,
            "subprocess_p50_ms": pct(theirs, 50) * 1000,
            "ratio_p50": pct(ours, 50) / pct(theirs, 50),
        }

    rows = [
        row(f"create to first output ({args.rounds})", creates, plain_start),
        row(f"exec round trip ({args.execs})", execs, plain_exec),
    ]
    info = {"cpus": os.cpu_count(), "loadavg_end": os.getloadavg()[0]}
    print(f"{info['cpus']} CPUs, load average at the end {info['loadavg_end']:.2f}")
    print(f"{'measure':32} {'sandbox p50':>12} {'p99':>9} {'subprocess p50':>15} {'ratio':>7}")
    for r in rows:
        print(
            f"{r['measure']:32} {r['sandbox_p50_ms']:10.1f}ms {r['sandbox_p99_ms']:7.1f}ms "
            f"{r['subprocess_p50_ms']:13.2f}ms {r['ratio_p50']:6.1f}x"
        )
    print("saved", save_result("sandbox", {"machine": info, "rows": rows}))


if __name__ == "__main__":
    main()
