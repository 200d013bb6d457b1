#!/usr/bin/env python
"""A/B of two source trees on bench/hotpath.py's `.map` or warm-call measurement, in one
run: this tree against another (the tree before a change), alternating.

    .venv/bin/python bench/tree_ab.py --old /work/before18/src map [--n 10000] [--rounds 4]
    .venv/bin/python bench/tree_ab.py --old /work/before18/src roundtrip [--calls 3000]

Each round runs `bench/hotpath.py <what>` once with the old tree first on PYTHONPATH (the
SDK, the server and the containers' runtime all come from it), then once with this tree;
each run has a fresh ketch server (core.Ketch). Prints every round, the medians, and
new/old ratios (of inputs/s or of the p50), and writes the rounds to
bench/results/tree-ab-*.json. `--also KEY=VALUE` adds a third side in each round: this tree
with that variable set (KETCH_PREFETCH=0 tells the prefetch window's share of a change).
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

from _common import save_result  # noqa: E402

_RATE = re.compile(r"\((\d+) inputs/s\)")
_P50 = re.compile(r"\(p50 (\d+) us\)")
_CPU = re.compile(r"CPU all processes\s+(\d+) us")


def one(what: str, src: str | None, extra: list[str], set_env: str = "") -> dict[str, float]:
    env = dict(os.environ)
    if set_env:
        key, _, value = set_env.partition("=")
        env[key] = value
    if src is not None:
        env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run(
        [sys.executable, str(BENCH / "hotpath.py"), what, *extra],
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"hotpath {what} failed:\n{proc.stdout}\n{proc.stderr}")
    value = (_RATE if what == "map" else _P50).search(proc.stdout)
    cpu = _CPU.search(proc.stdout)
    assert value and cpu, proc.stdout
    return {"value": float(value.group(1)), "cpu_us": float(cpu.group(1))}


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("what", choices=["map", "roundtrip"])
    ap.add_argument("--old", required=True, help="the other tree's src directory")
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--n", type=int, default=10_000, help="map: inputs per map")
    ap.add_argument("--calls", type=int, default=3000, help="roundtrip: timed calls")
    ap.add_argument(
        "--also",
        default="",
        metavar="KEY=VALUE",
        help="a third side: this tree with KEY=VALUE set (e.g. KETCH_PREFETCH=0)",
    )
    args = ap.parse_args()
    extra = ["--n", str(args.n)] if args.what == "map" else ["--calls", str(args.calls)]
    unit = "inputs/s" if args.what == "map" else "p50 us"
    sides = [("old", args.old, ""), ("new", None, "")]
    if args.also:
        sides.append((f"new+{args.also}", None, args.also))
    rounds: dict[str, list[dict[str, float]]] = {side: [] for side, _, _ in sides}
    for r in range(args.rounds):
        for side, src, set_env in sides:
            res = one(args.what, src, extra, set_env)
            rounds[side].append(res)
            print(f"round {r + 1} {side}: {res['value']:8.0f} {unit}, CPU {res['cpu_us']:.0f} us")
    med: dict[str, Any] = {
        side: {k: statistics.median(x[k] for x in rs) for k in ("value", "cpu_us")}
        for side, rs in rounds.items()
    }
    print()
    for side, m in med.items():
        print(f"{side:24s} median {m['value']:8.0f} {unit}, CPU per unit {m['cpu_us']:.0f} us")
    for side in list(med)[1:]:
        per = [n["value"] / o["value"] for o, n in zip(rounds["old"], rounds[side], strict=True)]
        print(
            f"{side}/old, median: {med[side]['value'] / med['old']['value']:.2f}x; per round: "
            + ", ".join(f"{p:.2f}" for p in per)
        )
    save_result("tree-ab", {"args": vars(args), "rounds": rounds, "medians": med})


if __name__ == "__main__":
    main()
