#!/usr/bin/env python
"""The first cold start after a deploy, A/B: this tree against another (the tree before a
change), each a ketch server of its own, in one run.

    .venv/bin/python bench/deploy_cold.py --old /work/before18/src [--deploys 10] [--after 2]

One sample: `ketch deploy bench/bench_cold_web.py` (each deploy is a new version, so its
fork-server template is new too), then, `--after` seconds later (a user's first request
comes some time after the deploy returns), `GET /` on a new connection until the whole
response is in, with no container running: the first cold start of that version. Then,
once the endpoint is back at zero containers, one more cold start of the same version (a
later one) for reference. Deploys alternate between the two servers, so that load from
elsewhere hits both alike. Prints medians, the ratio new/old, and writes every sample to
bench/results/deploy-cold-*.json.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

from _common import machine_line, save_result  # noqa: E402
from coldstart_bench import KetchServer, timed_get  # noqa: E402
from core import loadavg, log, machine_info  # noqa: E402


class Side(KetchServer):
    """A server whose ketch comes from `src` (None: this tree)."""

    def __init__(self, name: str, src: str | None) -> None:
        super().__init__(name, fork_server=True)
        if src is not None:
            self.env["PYTHONPATH"] = src + os.pathsep + self.env.get("PYTHONPATH", "")


def sample(side: Side, after: float) -> dict[str, Any]:
    side.deploy()
    time.sleep(after)
    first = timed_get(side.url)
    side.wait_zero()
    time.sleep(0.3)
    later = timed_get(side.url)
    side.wait_zero()
    log(f"{side.name}: first after deploy {first:7.1f} ms, later {later:7.1f} ms")
    return {"first_ms": first, "later_ms": later}


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--old", required=True, help="the other tree's src directory")
    ap.add_argument("--deploys", type=int, default=10, help="deploys per side")
    ap.add_argument("--after", type=float, default=2.0, help="seconds from deploy to request")
    args = ap.parse_args()
    info = machine_info()
    sides = [Side("old", args.old), Side("new", None)]
    samples: dict[str, list[dict[str, Any]]] = {s.name: [] for s in sides}
    try:
        for _ in range(args.deploys):
            for side in sides:
                samples[side.name].append(sample(side, args.after))
    finally:
        for side in sides:
            side.close()
    med = {
        name: {k: statistics.median(s[k] for s in rows) for k in ("first_ms", "later_ms")}
        for name, rows in samples.items()
    }
    info["loadavg_end"] = loadavg()
    print(machine_line(info))
    print(f"first cold start after a deploy ({args.deploys} deploys each, {args.after:g} s after)")
    print(f"{'':5s} {'first p50 ms':>13s} {'later p50 ms':>13s}")
    for name, m in med.items():
        print(f"{name:5s} {m['first_ms']:13.1f} {m['later_ms']:13.1f}")
    print(f"new/old first: {med['new']['first_ms'] / med['old']['first_ms']:.3f}x")
    save_result(
        "deploy-cold", {"machine": info, "args": vars(args), "samples": samples, "medians": med}
    )


if __name__ == "__main__":
    main()
