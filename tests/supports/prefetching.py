"""Functions whose inputs wait in a container's prefetch window
(tests/integration/test_prefetch.py)."""

from __future__ import annotations

import asyncio
import os
import signal
import time

import ketch

app = ketch.App("prefetching")


@app.function(max_containers=1, timeout=3)
def nap(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


@app.function(max_containers=1)
def kill_once(i: int, marker_dir: str, kill: bool) -> int:
    """Input `i` kills its own container (SIGKILL) the first time it runs, when `kill`."""
    marker = os.path.join(marker_dir, f"killed-{i}")
    if kill and not os.path.exists(marker):
        with open(marker, "w"):
            pass
        os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(0.05)  # long enough for the inputs after it to be sent ahead
    return i


# The same as coroutines: their inputs wait in the runtime's own queue, not the input
# thread's (the prefetch window's two places in a container).
@app.function(max_containers=1, timeout=3)
async def nap_async(seconds: float) -> float:
    await asyncio.sleep(seconds)
    return seconds


@app.function(max_containers=1)
async def kill_once_async(i: int, marker_dir: str, kill: bool) -> int:
    marker = os.path.join(marker_dir, f"killed-{i}")
    if kill and not os.path.exists(marker):
        with open(marker, "w"):
            pass
        os.kill(os.getpid(), signal.SIGKILL)
    await asyncio.sleep(0.05)
    return i


@app.cls(max_containers=1)
class Mixed:
    """A sync and an async method in one container of one input at a time: each records
    when it ran, so that the test sees whether two ever overlapped."""

    @ketch.method()
    def sync_step(self, log: str, i: int) -> int:
        start = time.monotonic()
        time.sleep(0.1)
        with open(log, "a") as fh:
            fh.write(f"{start} {time.monotonic()}\n")
        return i

    @ketch.method()
    async def async_step(self, log: str, i: int) -> int:
        start = time.monotonic()
        await asyncio.sleep(0.1)
        with open(log, "a") as fh:
            fh.write(f"{start} {time.monotonic()}\n")
        return i
