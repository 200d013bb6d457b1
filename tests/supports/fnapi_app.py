"""Plain functions for the function handle API (issue 15): per-handle options
(with_options, with_concurrency, with_batching), update_autoscaler and get_current_stats."""

import os
import time
from pathlib import Path

import ketch
from supports import ident

app = ketch.App("fnapi")


@app.function(max_containers=1)
def info() -> dict[str, object]:
    return {"who": ident.me(), "secret": os.environ.get("FNAPI_SECRET")}


@app.function(max_containers=1)
def span(seconds: float) -> tuple[str, float, float]:
    start = time.time()
    time.sleep(seconds)
    return ident.me(), start, time.time()


@app.function()
def size(x: object) -> object:
    # Batched, `x` is the list of the batch; plain, it is one value.
    if isinstance(x, list):
        return [len(x)] * len(x)
    return -1


@app.function(max_containers=1)
def hold(gate: str) -> str:
    """Runs until the file `gate` exists: the inputs behind it wait (a backlog)."""
    while not Path(gate).exists():
        time.sleep(0.02)
    return ident.me()


@app.function(scaledown_window=600)
def warm() -> str:
    return ident.me()


@app.cls(scaledown_window=600)
class Warmed:
    @ketch.method()
    def who(self) -> str:
        return ident.me()
