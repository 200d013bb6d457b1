"""Functions with scaling settings."""

import os
import time

import ketch

app = ketch.App("scaling")


@app.function(scaledown_window=1)
def quick_to_sleep() -> int:
    return os.getpid()


@app.function(min_containers=1, scaledown_window=1)
def kept_warm() -> int:
    return os.getpid()


@app.function(max_containers=1)
def serial(seconds: float) -> float:
    time.sleep(seconds)
    return time.time()


@app.function()
def other() -> str:
    return "other"


@app.function(single_use_containers=True)
def fresh_each_time() -> int:
    return os.getpid()
