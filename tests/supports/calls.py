"""An app for the single-call paths: `.remote`, `.local`, generators, `.aio`, errors."""

import asyncio
import dataclasses
import hashlib
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import ketch
from supports import ident

app = ketch.App("ketch-calls")


@dataclasses.dataclass
class Point:
    """A user type that travels by reference: both sides import this module."""

    x: int
    y: int


@app.function(max_containers=1)
def describe(*args: Any, **kwargs: Any) -> dict[str, Any]:
    return {"args": args, "kwargs": kwargs, "pid": ident.me()}


@app.function(max_containers=1)
async def async_describe(*args: Any, **kwargs: Any) -> dict[str, Any]:
    await asyncio.sleep(0)
    return {"args": args, "kwargs": kwargs, "pid": ident.me(), "async": True}


@app.function(max_containers=1)
def apply(fn: Callable[[Any], Any], value: Any) -> Any:
    return fn(value)


@app.function(max_containers=1)
def move(p: Point, dx: int) -> Point:
    return Point(p.x + dx, p.y)


@app.function(max_containers=1, timeout=600)
def echo_bytes(data: bytes) -> bytes:
    # Touch the data so the container cannot hand back a lazily unread buffer.
    assert len(data) > 0
    return data


@app.function(max_containers=1, timeout=600)
def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@app.function(max_containers=1)
async def sleep_for(seconds: float) -> str:
    await asyncio.sleep(seconds)
    return f"slept {seconds}"


@app.function(max_containers=1)
def pause_gen(pause: float) -> Iterator[str]:
    yield "first"
    time.sleep(pause)
    yield "second"


@app.function(max_containers=1)
async def async_pause_gen(pause: float) -> AsyncIterator[str]:
    yield "first"
    await asyncio.sleep(pause)
    yield "second"


@app.function(max_containers=1)
def count_to(n: int) -> Iterator[int]:
    yield from range(n)


@app.function()
def endless_gen(path: str):  # type: ignore[no-untyped-def]
    """Yields forever, recording each item, until the caller stops iterating."""
    i = 0
    while True:
        with open(path, "a") as fh:
            fh.write(f"{i}\n")
        yield i
        i += 1
        time.sleep(0.05)
