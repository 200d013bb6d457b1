#!/usr/bin/env python
"""This checkout against another copy of ketch (an older commit), side by side in one run.

    mkdir -p /tmp/base && git archive <commit> | tar -x -C /tmp/base
    .venv/bin/python bench/versus.py remote --baseline /tmp/base [--rounds 5 --calls 2000]
    .venv/bin/python bench/versus.py gateway --baseline /tmp/base [--rounds 3]

remote: warm `.remote()` latency (p50, p99) over one warm container, each round in a fresh
KETCH_HOME with its own server, the two trees taking turns (round 1 this tree, round 1 the
baseline, ...) so that load from elsewhere hits both alike. gateway: bench/gateway_bench.py's
`gateway` row (requests/s through the Gateway in front of uvicorn), run under each tree in
turn. Prints each round and the after/before ratio of the medians.

Only the tree's `src/` changes between the two sides (PYTHONPATH puts it first); the venv,
Python and the load are the same.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent

# Runs inside a child process whose PYTHONPATH selects the ketch under test.
_REMOTE = r"""
import json, os, statistics, sys, time
sys.path.insert(0, os.environ["BENCH_DIR"])
import ketch
from bench_app import rt_app, rt_echo
calls = int(sys.argv[1])
with rt_app.run():
    for i in range(200):
        rt_echo.remote(i)
    lat = []
    for i in range(calls):
        t0 = time.perf_counter()
        rt_echo.remote(i)
        lat.append(time.perf_counter() - t0)
lat.sort()
print(json.dumps({"p50": lat[len(lat) // 2], "p99": lat[int(len(lat) * 0.99)],
                  "ketch": ketch.__file__}))
"""


def _env(tree: Path, home: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(tree / "src")
    env["KETCH_HOME"] = home
    env["KETCH_GATEWAY_PORT"] = "0"
    env["BENCH_DIR"] = str(BENCH)
    return env


def _stop(home: str, env: dict[str, str]) -> None:
    subprocess.run(
        [sys.executable, "-m", "ketch.cli", "server", "stop"],
        env=env,
        capture_output=True,
        timeout=60,
        check=False,
    )


def remote_round(tree: Path, calls: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="kv-", dir="/tmp") as home:
        env = _env(tree, home)
        try:
            out = subprocess.run(
                [sys.executable, "-c", _REMOTE, str(calls)],
                env=env,
                capture_output=True,
                text=True,
                timeout=600,
                check=True,
            )
        finally:
            _stop(home, env)
    result: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def gateway_round(tree: Path, duration: float) -> float:
    env = _env(tree, tempfile.gettempdir())
    out = subprocess.run(
        [
            sys.executable,
            str(BENCH / "gateway_bench.py"),
            "--duration",
            str(duration),
            "--concurrency",
            "32",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    )
    for line in out.stdout.splitlines():
        cells = line.split()
        if cells and cells[0] == "gateway":
            return float(cells[2].replace(",", ""))
    raise RuntimeError(f"no gateway row in:\n{out.stdout}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("what", choices=["remote", "gateway"])
    ap.add_argument("--baseline", type=Path, required=True, help="a copy of the older tree")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--calls", type=int, default=2000)
    ap.add_argument("--duration", type=float, default=5.0)
    args = ap.parse_args()
    sides = {"this": ROOT, "baseline": args.baseline.resolve()}
    got: dict[str, list[float]] = {name: [] for name in sides}
    for r in range(args.rounds):
        for name, tree in sides.items():
            if args.what == "remote":
                res = remote_round(tree, args.calls)
                got[name].append(res["p50"])
                print(
                    f"round {r + 1} {name:8} p50 {res['p50'] * 1e6:7.0f} us  "
                    f"p99 {res['p99'] * 1e6:7.0f} us",
                    flush=True,
                )
            else:
                rps = gateway_round(tree, args.duration)
                got[name].append(rps)
                print(f"round {r + 1} {name:8} {rps:9.0f} req/s", flush=True)
    this, base = statistics.median(got["this"]), statistics.median(got["baseline"])
    if args.what == "remote":
        print(
            f"median p50: this {this * 1e6:.0f} us, baseline {base * 1e6:.0f} us; "
            f"speed after/before {base / this:.3f}x"
        )
    else:
        print(
            f"median: this {this:.0f} req/s, baseline {base:.0f} req/s; "
            f"after/before {this / base:.3f}x"
        )


if __name__ == "__main__":
    main()
