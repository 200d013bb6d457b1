"""A small app used by the core call tests."""

import asyncio
import time

import ketch

app = ketch.App("basic")


class CustomError(Exception):
    """An exception class that lives only in the app module."""


@app.function()
def square(x: int) -> int:
    return x * x


@app.function()
async def async_square(x: int) -> int:
    await asyncio.sleep(0)
    return x * x


@app.function()
def fail(kind: str) -> None:
    if kind == "value":
        raise ValueError("bad value from the container")
    raise CustomError("custom failure")


@app.function()
def slow_gen(n: int, delay: float):
    for i in range(n):
        yield i
        time.sleep(delay)


@app.function()
def sleepy(seconds: float) -> str:
    time.sleep(seconds)
    return "done"
