"""Long operations over HTTP (a deploy, a sandbox's creation): their log lines as they come,
then their result or error, one JSON object per line (application/x-ndjson)."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from fastapi.responses import StreamingResponse

from ketch.exception import Error

log = logging.getLogger("ketch.api")

Say = Callable[[str], None]


def error_body(exc: Error) -> dict[str, Any]:
    return {"error": {"type": type(exc).__name__, "message": str(exc)}}


def stream_progress(
    work: Callable[[Say], Awaitable[dict[str, Any]]], what: str
) -> StreamingResponse:
    """Run `work(say)`; stream `{"log": line}` for each line it says, then `{"result": ...}`
    or `{"error": ...}`. The work goes on to its end even if the client leaves: a deploy
    or a sandbox must not be left half-done."""
    queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()

    async def run() -> None:
        try:
            queue.put_nowait({"result": await work(lambda line: queue.put_nowait({"log": line}))})
        except Error as exc:
            queue.put_nowait(error_body(exc))
        except Exception as exc:
            # Not one of ketch's own errors: a bug, with its traceback in the log.
            log.exception("%s failed", what)
            queue.put_nowait({"error": {"type": "Error", "message": repr(exc)}})
        finally:
            queue.put_nowait(None)

    task = asyncio.ensure_future(run())

    async def lines() -> AsyncIterator[bytes]:
        try:
            while (item := await queue.get()) is not None:
                yield json.dumps(item).encode() + b"\n"
        finally:
            await asyncio.shield(task)

    return StreamingResponse(lines(), media_type="application/x-ndjson")
