"""Sync code on a container's input thread (max_inputs == 1: `_runtime/direct.py`)."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import ketch
from supports import ident

app = ketch.App("sync-thread")


@app.function(timeout=2)
def sleeper(seconds: float) -> str:
    time.sleep(seconds)
    return ident.me()


@app.function()
def stall(seconds: float, marker: str = "") -> str:
    if marker:
        with open(marker, "w") as fh:
            fh.write("started")
    time.sleep(seconds)
    return ident.me()


@app.function()
def workers(n: int) -> list[int]:
    """Threads of its own, each with a thread-local of its own."""
    local = threading.local()
    out: list[int] = []
    lock = threading.Lock()

    def work(i: int) -> None:
        local.value = i * i
        time.sleep(0.01)
        with lock:
            out.append(local.value)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sorted(out)


@app.function()
def runs_a_loop(x: int) -> int:
    """Sync code that runs an event loop of its own (as on a plain thread it may)."""

    async def double() -> int:
        await asyncio.sleep(0)
        return 2 * x

    return asyncio.run(double())


@app.function()
def returns_a_coroutine(x: int) -> Any:
    async def later() -> int:
        await asyncio.sleep(0)
        return x + 1

    return later()


@app.function()
def echo(data: bytes) -> bytes:
    return data


@app.function()
def fails(msg: str) -> None:
    raise KeyError(msg)


@app.function()
def ids() -> dict[str, Any]:
    return {
        "input": ketch.current_input_id(),
        "call": ketch.current_function_call_id(),
    }


_tls = threading.local()


@app.cls()
class Local:
    @ketch.enter()
    def setup(self) -> None:
        _tls.value = "set in @enter"
        self.enter_thread = threading.get_ident()

    @ketch.method()
    def read(self) -> dict[str, Any]:
        return {
            "value": getattr(_tls, "value", None),
            "same_thread": threading.get_ident() == self.enter_thread,
            "pid": ident.me(),
        }
