#!/usr/bin/env python
"""Scheduler drift of a deployed `Period(seconds=1)` function, side by side with a plain
Python loop that sleeps until each next second, in one run.

    .venv/bin/python bench/schedule_drift.py [--seconds 300]

ketch: bench/schedule_drift_app.py is deployed on a private server (fresh KETCH_HOME), with
one warm container; each run writes `time.time()` at its entry into a ketch.Dict. The
comparison, in a subprocess over the same seconds: `while True: sleep until t0 + k; record
time.time()`. Runs recorded during the first two seconds after the container is ready are
dropped.

For each, drift per run = actual start - the ideal 1 s grid started at the first recorded
run; p50, p99 and max of it. Also, the lateness of each run against the time it was due
(ketch: the scheduler's own grid, read from `app status`; the loop: its target), and for
ketch that lateness split into the scheduler's part (call created - due) and the dispatch
part (function entry - call created).

Prints a table and writes the raw samples to bench/results/schedule-drift-*.json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

from core import ROOT, Ketch, _git, _table, loadavg, log, pct  # noqa: E402

PERIOD = 1.0

LOOP = """
import json, sys, time
period, seconds = float(sys.argv[1]), float(sys.argv[2])
t0 = time.time()
out = []
k = 1
while True:
    target = t0 + k * period
    if target > t0 + seconds:
        break
    time.sleep(max(0.0, target - time.time()))
    out.append((target, time.time()))
    k += 1
print(json.dumps(out))
"""


def drift(starts: list[float]) -> list[float]:
    """Each start minus its slot on the grid that begins at the first start."""
    t0 = starts[0]
    return [t - (t0 + round((t - t0) / PERIOD) * PERIOD) for t in starts]


def stats_ms(values: list[float]) -> dict[str, float]:
    ms = [v * 1000 for v in values]
    return {"n": len(ms), "p50": pct(ms, 50), "p99": pct(ms, 99), "max": max(ms)}


def measure(seconds: float) -> dict[str, Any]:
    from schedule_drift_app import RUNS, app

    import ketch
    from ketch._client.deploy import ApiClient
    from ketch._utils.aio import run_sync

    k = Ketch()
    try:
        app.deploy()
        assert app.app_id is not None
        k.wait_ready(app.app_id, 1)
        runs = ketch.Dict.from_name(RUNS, create_if_missing=True)
        time.sleep(2.0)
        begin = time.time()
        loop = subprocess.Popen(
            [sys.executable, "-c", LOOP, str(PERIOD), str(seconds)],
            stdout=subprocess.PIPE,
            text=True,
        )
        log(f"recording {seconds:g} s (ketch and the loop at once)")
        loop_out, _ = loop.communicate(timeout=seconds + 60)
        end = time.time()
        status = run_sync(ApiClient().call("GET", f"/v1/apps/{app.name}/status"))
        sched = next(s for s in status["schedules"] if s["function"] == "tick")
        calls = run_sync(
            ApiClient().call("GET", f"/v1/apps/{app.name}/calls", params={"limit": 5000})
        )["calls"]
        starts = sorted(float(v) for _, v in runs.items())
        run_sync(ApiClient().call("POST", f"/v1/apps/{app.app_id}/stop"))
    finally:
        k.close()
    starts = [t for t in starts if begin <= t <= end]
    # The scheduler keeps the phase of the deploy: every due time is next_run - k * PERIOD.
    phase = float(sched["next_run"])

    created = sorted(
        float(c["created"]) for c in calls if c["function"] == "tick" and c["kind"] == "spawn"
    )
    created = [c for c in created if begin - PERIOD <= c <= end]
    # Pair each start with the last call created before it (runs are a second apart).
    sched_part, dispatch_part, late = [], [], []
    for t in starts:
        d = phase - ((phase - t) // PERIOD + 1) * PERIOD  # the last due time <= t
        late.append(t - d)
        before = [c for c in created if d - 0.001 <= c <= t]
        if before:
            sched_part.append(before[-1] - d)
            dispatch_part.append(t - before[-1])
    loop_rows = json.loads(loop_out)
    return {
        "ketch_starts": starts,
        "ketch_created": created,
        "loop": loop_rows,
        "ketch": {
            "drift": stats_ms(drift(starts)),
            "late": stats_ms(late),
            "scheduler": stats_ms(sched_part) if sched_part else None,
            "dispatch": stats_ms(dispatch_part) if dispatch_part else None,
            "missing": round((end - begin) / PERIOD) - len(starts),
        },
        "plain": {
            "drift": stats_ms(drift([a for _, a in loop_rows])),
            "late": stats_ms([a - t for t, a in loop_rows]),
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=300.0, help="how long to record")
    args = parser.parse_args()
    info = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "ketch_commit": _git("rev-parse", "--short", "HEAD"),
        "ketch_src_dirty": bool(_git("status", "--porcelain", "--", str(ROOT / "src"))),
        "loadavg_start": loadavg(),
    }
    res = measure(args.seconds)
    info["loadavg_end"] = loadavg()
    res["info"] = info
    rows = []
    for label, key in (("drift from the first run's grid", "drift"), ("late vs due", "late")):
        for stat in ("p50", "p99", "max"):
            rows.append((f"{label} {stat} (ms)", res["ketch"][key][stat], res["plain"][key][stat]))
    for part in ("scheduler", "dispatch"):
        if res["ketch"][part]:
            for stat in ("p50", "p99", "max"):
                rows.append((f"ketch {part} part {stat} (ms)", res["ketch"][part][stat], "-"))
    print(_table("Period(seconds=1): start drift", ["", "ketch", "plain loop"], rows))
    print(
        f"runs: ketch {res['ketch']['drift']['n']} (missing {res['ketch']['missing']}), "
        f"loop {res['plain']['drift']['n']}; {info['date']}, ketch {info['ketch_commit']}"
        f"{' + uncommitted src' if info['ketch_src_dirty'] else ''}, load average "
        f"{info['loadavg_start']} -> {info['loadavg_end']}"
    )
    from _common import save_result

    log(f"raw results: {save_result('schedule-drift', res)}")


if __name__ == "__main__":
    main()
