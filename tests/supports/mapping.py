"""An app for the `.map` family: ordering, failures, kwargs and side effects."""

import asyncio
import os
from pathlib import Path

import ketch

app = ketch.App("ketch-mapping")


@app.function(max_containers=1)
@ketch.concurrent(max_inputs=20)
async def delayed(x: int, seconds: float) -> int:
    await asyncio.sleep(seconds)
    return x


@app.function(max_containers=1)
@ketch.concurrent(max_inputs=20)
async def fail_on(x: int, bad: int = 3) -> int:
    if x == bad:
        raise ValueError(f"input {x} is bad")
    return x * 10


@app.function(max_containers=1)
@ketch.concurrent(max_inputs=20)
async def combine(a: int, b: int, *, scale: int = 1, offset: int = 0) -> int:
    return (a + b) * scale + offset


@app.function(max_containers=1)
@ketch.concurrent(max_inputs=20)
async def touch(directory: str, name: str) -> str:
    if name.startswith("bad"):
        raise RuntimeError(f"refusing {name}")
    Path(directory, name).write_text(str(os.getpid()))
    return name
