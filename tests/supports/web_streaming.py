"""Streaming endpoints for the web tests (W10): server-sent events from sync and async
generators, `.remote_gen()` and `.map()` of other functions fed into a StreamingResponse,
and a handler that records being cancelled when its client goes away.

Only ketch and the standard library at the top: the plain functions' containers import
this module without the web packages.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import ketch

app = ketch.App("ketch-web-stream")

GAP = 0.4  # seconds between events: large enough to see at the client, small enough to wait


@app.function()
def produce(n: int) -> Iterator[bytes]:
    for i in range(n):
        yield f"data: result {i}\n\n".encode()
        time.sleep(GAP)


@app.function()
def segment(i: int) -> str:
    time.sleep(0.05 * i)
    return f"segment {i}\n"


def _sync_events(n: int) -> Iterator[bytes]:
    for i in range(n):
        yield f"data: sync {i}\n\n".encode()
        time.sleep(GAP)


async def _async_events(n: int) -> AsyncIterator[str]:
    for i in range(n):
        yield f"data: async {i}\n\n"
        await asyncio.sleep(GAP)


@app.function()
@ketch.fastapi_endpoint()
def sse_sync(n: int = 5) -> Any:
    from fastapi.responses import StreamingResponse

    return StreamingResponse(_sync_events(n), media_type="text/event-stream")


@app.function()
@ketch.fastapi_endpoint()
async def sse_async(n: int = 5) -> Any:
    from fastapi.responses import StreamingResponse

    return StreamingResponse(_async_events(n), media_type="text/event-stream")


@app.function()
@ketch.fastapi_endpoint()
def via_remote_gen(n: int = 4) -> Any:
    from fastapi.responses import StreamingResponse

    return StreamingResponse(produce.remote_gen(n), media_type="text/event-stream")


@app.function()
@ketch.fastapi_endpoint()
def via_map(n: int = 6) -> Any:
    from fastapi.responses import StreamingResponse

    return StreamingResponse(segment.map(range(n)), media_type="text/plain")


@app.function()
@ketch.fastapi_endpoint()
async def via_map_aio(n: int = 6) -> Any:
    from fastapi.responses import StreamingResponse

    async def events() -> AsyncIterator[str]:
        async for part in segment.map.aio(range(n)):
            yield f"data: {part.strip()}\n\n"

    return StreamingResponse(events(), media_type="text/event-stream")


@app.function()
@ketch.fastapi_endpoint()
async def endless(marker: str) -> Any:
    """Ticks until the client leaves; the cancellation is written to `marker`."""
    from fastapi.responses import StreamingResponse

    async def ticks() -> AsyncIterator[str]:
        path = Path(marker)
        path.write_text("started\n")
        try:
            while True:
                yield "data: tick\n\n"
                await asyncio.sleep(0.05)
        except (asyncio.CancelledError, GeneratorExit):
            with path.open("a") as fh:
                fh.write("cancelled\n")
            raise

    return StreamingResponse(ticks(), media_type="text/event-stream")


@app.function()
@ketch.fastapi_endpoint()
def endless_sync(marker: str) -> Any:
    """The same with a sync generator (run on a thread): it is closed when the client goes."""
    from fastapi.responses import StreamingResponse

    def ticks() -> Iterator[str]:
        path = Path(marker)
        path.write_text("started\n")
        try:
            while True:
                yield "data: tick\n\n"
                time.sleep(0.05)
        finally:
            with path.open("a") as fh:
                fh.write("closed\n")

    return StreamingResponse(ticks(), media_type="text/event-stream")
