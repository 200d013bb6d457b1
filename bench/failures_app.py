"""The ketch app that bench/failures.py measures: functions that run past a 1 s timeout
(async, cancelled; sync, its container killed), one that fails once and is retried after a
fixed 1 s delay, and a web app with a fast route and a slow one for long requests (W14).

Only ketch and the standard library at the top: the container imports this module.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import ketch

LIMIT = 1  # seconds: the timeout of the two sleepers
RETRY_DELAY = 1.0

app = ketch.App("bench-failures")


@app.function(timeout=LIMIT, startup_timeout=120, min_containers=1, scaledown_window=600)
async def async_sleeper(seconds: float) -> str:
    await asyncio.sleep(seconds)
    return "woke"


@app.function(timeout=LIMIT, startup_timeout=120, min_containers=1, scaledown_window=600)
def sync_sleeper(seconds: float) -> str:
    end = time.monotonic() + seconds
    while time.monotonic() < end:  # holds its thread: only killing the container stops it
        time.sleep(0.01)
    return "woke"


@app.function(
    min_containers=1,
    scaledown_window=600,
    retries=ketch.Retries(max_retries=1, initial_delay=RETRY_DELAY, backoff_coefficient=1.0),
)
def fails_once(trace: str) -> list[float]:
    """Appends the time of each attempt to `trace`; the first attempt fails."""
    with open(trace, "a") as fh:
        fh.write(f"{time.time()}\n")
    with open(trace) as fh:
        stamps = [float(x) for x in fh.read().split()]
    if len(stamps) < 2:
        raise RuntimeError("first attempt fails")
    return stamps


@app.function(min_containers=1, max_containers=1, scaledown_window=600)
@ketch.concurrent(max_inputs=50)
@ketch.asgi_app()
def web() -> Any:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    async def fast(request: Request) -> JSONResponse:
        return JSONResponse({"hello": "world"})

    async def slow(request: Request) -> JSONResponse:
        await asyncio.sleep(float(request.query_params.get("seconds", "1.5")))
        return JSONResponse({"hello": "world"})

    return Starlette(routes=[Route("/fast", fast), Route("/slow", slow)])
