"""The web apps that bench/web_bench.py measures: one hello-world FastAPI handler and one SSE
handler, served three ways (a ketch endpoint, bare uvicorn, Ray Serve).

The handlers are defined once, here, and every system serves these same functions:
  - ketch: `web_app` below, one endpoint per handler (its container builds the FastAPI app);
  - bare uvicorn and Ray Serve: `make_fastapi_app()`, a FastAPI app with the same two
    handlers as routes (`/` and `/sse`).
Kept apart from the driver so that a ketch container imports only this small module.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from fastapi.responses import StreamingResponse

import ketch

# -- ketch: one warm container per endpoint, up to 100 requests at once in it ----------------
web_app = ketch.App("bench-web")

_OPTS: dict[str, Any] = {"min_containers": 1, "max_containers": 1, "scaledown_window": 600}


@web_app.function(**_OPTS)
@ketch.concurrent(max_inputs=100)
@ketch.fastapi_endpoint(label="bench-hello")
async def hello() -> dict[str, str]:
    return {"hello": "world"}


async def _events(n: int, interval_ms: float) -> Any:
    for i in range(n):
        await asyncio.sleep(interval_ms / 1e3)
        # The handler's wall clock at the yield; the client subtracts it from its arrival time.
        yield f"id: {i}\ndata: {time.time():.6f}\n\n"


@web_app.function(**_OPTS)
@ketch.concurrent(max_inputs=100)
@ketch.fastapi_endpoint(label="bench-sse")
async def sse(n: int = 200, interval_ms: float = 10.0) -> StreamingResponse:
    return StreamingResponse(
        _events(n, interval_ms),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache"},
    )


# -- bare uvicorn and Ray Serve: the same two handlers as routes of one FastAPI app ----------
def make_fastapi_app() -> Any:
    from fastapi import FastAPI

    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)
    app.add_api_route("/", hello.get_raw_f(), methods=["GET"])
    app.add_api_route("/sse", sse.get_raw_f(), methods=["GET"])
    return app


# For `uvicorn bench_web_app:fastapi_app` (bare uvicorn). Built lazily by uvicorn's import.
def __getattr__(name: str) -> Any:
    if name == "fastapi_app":
        app = make_fastapi_app()
        globals()["fastapi_app"] = app
        return app
    raise AttributeError(name)
