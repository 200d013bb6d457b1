"""Functions that run past their timeout, in the ways code can be stuck."""

import asyncio
import time

import ketch

app = ketch.App("timeouts")


@app.function(timeout=2)
async def async_sleeper(seconds: float) -> str:
    await asyncio.sleep(seconds)
    return "finished"


@app.function(timeout=2)
def busy_loop(seconds: float) -> str:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass
    return "finished"


attempts: list[float] = []


@app.function(retries=ketch.Retries(max_retries=2, initial_delay=0.5, backoff_coefficient=2.0))
def flaky(path: str) -> int:
    with open(path, "a") as fh:
        fh.write(f"{time.time()}\n")
    with open(path) as fh:
        n = len(fh.read().splitlines())
    if n < 3:
        raise RuntimeError(f"attempt {n} fails")
    return n


@app.function(retries=ketch.Retries(max_retries=2, initial_delay=0.1))
def map_item(path: str, i: int) -> int:
    """Input 3 fails on its first two attempts; every attempt is recorded."""
    with open(path, "a") as fh:
        fh.write(f"{i}\n")
    with open(path) as fh:
        seen = fh.read().split().count(str(i))
    if i == 3 and seen < 3:
        raise RuntimeError(f"input {i} attempt {seen}")
    return i * 10


class CustomRetryError(Exception):
    pass


@app.function(retries=1)
def always_fails(path: str) -> None:
    with open(path, "a") as fh:
        fh.write("x\n")
    raise CustomRetryError("still failing")
