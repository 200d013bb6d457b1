"""An app whose function leaves a trace of every start and finish in a file."""

import os
import time

import ketch

app = ketch.App("durable")


@app.function()
def traced(path: str, seconds: float, value: int) -> int:
    with open(path, "a") as fh:
        fh.write(f"start {os.getpid()}\n")
    time.sleep(seconds)
    with open(path, "a") as fh:
        fh.write(f"end {os.getpid()}\n")
    return value * 2
