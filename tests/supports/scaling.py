"""Functions with scaling settings."""

import time

import ketch
from supports import ident

app = ketch.App("scaling")


@app.function(scaledown_window=1)
def quick_to_sleep() -> str:
    return ident.me()


@app.function(min_containers=1, scaledown_window=1)
def kept_warm() -> str:
    return ident.me()


@app.function(max_containers=1)
def serial(seconds: float) -> float:
    time.sleep(seconds)
    return time.time()


@app.function()
def other() -> str:
    return "other"


@app.function(single_use_containers=True)
def fresh_each_time() -> str:
    return ident.me()  # the process, by `supports.ident`: a sandboxed pid is not unique
