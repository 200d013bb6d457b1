"""Streaming responses: server-sent events from a generator, from another function's
`.remote_gen()`, and from `.map()` / `.map.aio()` over other containers.

    ketch run examples/web_streaming.py
    ketch serve examples/web_streaming.py
    curl --no-buffer "$STREAM_ME_URL"      # events appear one by one

The plain functions' containers import this module too, and they have only the image's
packages: FastAPI is imported inside the web functions.
"""

import asyncio
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator
from typing import Any

import ketch

app = ketch.App("web-streaming")


def fake_event_streamer(n: int) -> Iterator[bytes]:
    for i in range(n):
        yield f"data: some data {i}\n\n".encode()
        time.sleep(0.2)


@app.function()
@ketch.fastapi_endpoint()
def stream_me(n: int = 5) -> Any:
    from fastapi.responses import StreamingResponse

    return StreamingResponse(fake_event_streamer(n), media_type="text/event-stream")


@app.function()
def fake_video_render(n: int) -> Iterator[bytes]:
    for i in range(n):
        yield f"data: finished processing part {i}\n\n".encode()
        time.sleep(0.2)


@app.function()
@ketch.fastapi_endpoint()
def hook(n: int = 3) -> Any:
    from fastapi.responses import StreamingResponse

    return StreamingResponse(fake_video_render.remote_gen(n), media_type="text/event-stream")


@app.function()
def map_me(i: int) -> str:
    return f"segment {i}\n"


@app.function()
@ketch.fastapi_endpoint()
def mapped(n: int = 4) -> Any:
    from fastapi.responses import StreamingResponse

    return StreamingResponse(map_me.map(range(n)), media_type="text/plain")


def split_work(n: int) -> list[int]:
    time.sleep(0.1)  # blocking work: run it off the event loop
    return list(range(n))


async def wrapper(segments: list[int]) -> AsyncIterator[str]:
    # An async handler must not block its event loop: `.map.aio` instead of `.map`.
    async for partial_result in map_me.map.aio(segments):
        yield "data: " + partial_result.strip() + "\n\n"


@app.function()
@ketch.fastapi_endpoint()
async def transcribe(n: int = 3) -> Any:
    from fastapi.responses import StreamingResponse

    segments = await asyncio.to_thread(split_work, n)
    return StreamingResponse(wrapper(segments), media_type="text/event-stream")


def show(fn: ketch.Function) -> None:
    started = time.monotonic()
    with urllib.request.urlopen(str(fn.get_web_url()), timeout=60) as resp:
        for raw in resp:  # lines, as they arrive
            line = raw.decode().strip()
            if line:
                print(f"{fn.tag} +{time.monotonic() - started:.1f}s: {line}")


@app.local_entrypoint()
def main() -> None:
    for fn in (stream_me, hook, mapped, transcribe):
        show(fn)
