"""The ketch app that bench/schedule_drift.py measures (shipped to the containers; the
driver is not): a function run every second that records when each run began."""

from __future__ import annotations

import time

import ketch

app = ketch.App("bench-schedule-drift")
RUNS = "schedule-drift-runs"


# One warm container from the deploy on: the first run is not a cold start, so the grid
# the drift is measured on does not start late.
@app.function(schedule=ketch.Period(seconds=1), min_containers=1, scaledown_window=600)
def tick() -> None:
    started = time.time()  # first, before anything this run does costs time
    ketch.Dict.from_name(RUNS, create_if_missing=True).put(repr(started), started)
