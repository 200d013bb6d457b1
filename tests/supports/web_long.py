"""Web handlers for the long-request tests (W14): slow routes that count their runs in a
file named by the query string, a stream that starts at once and lasts past the request
timeout, a fast route, and a handler that runs past its function timeout.

Only ketch and the standard library at the top; Starlette is imported inside the container.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import ketch

app = ketch.App("ketch-web-long")


def _count_run(trace: str) -> int:
    with open(trace, "a") as f:
        f.write("run\n")
    return len(Path(trace).read_text().split())


@app.function(max_containers=1)
@ketch.concurrent(max_inputs=8)
@ketch.asgi_app()
def long_app() -> Any:
    import asyncio

    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, PlainTextResponse, StreamingResponse
    from starlette.routing import Route

    async def slow(request: Request) -> JSONResponse:
        q = request.query_params
        runs = _count_run(q["trace"])
        await asyncio.sleep(float(q.get("seconds", "5")))
        body = await request.body()
        return JSONResponse(
            {
                "runs": runs,
                "method": request.method,
                "body": body.decode(),
                "query": {k: v for k, v in q.items()},
            },
            status_code=201,
            headers={"x-slow": "yes"},
        )

    async def fast(request: Request) -> PlainTextResponse:
        return PlainTextResponse("fast answer", headers={"x-fast": "yes"})

    async def stream(request: Request) -> StreamingResponse:
        n = int(request.query_params.get("n", "5"))

        async def events() -> AsyncIterator[bytes]:
            for i in range(n):
                yield f"data: event {i}\n\n".encode()
                await asyncio.sleep(1.0)

        return StreamingResponse(events(), media_type="text/event-stream")

    return Starlette(
        routes=[
            Route("/slow", slow, methods=["GET", "POST"]),
            Route("/fast", fast),
            Route("/stream", stream),
        ]
    )


@app.function(timeout=4)
@ketch.fastapi_endpoint()
def past_timeout(seconds: float) -> dict[str, str]:
    time.sleep(seconds)
    return {"done": "yes"}


@app.cls()
class SlowStart:
    """An endpoint whose container takes longer to start than the request timeout."""

    @ketch.enter()
    def load(self) -> None:
        time.sleep(3)

    @ketch.fastapi_endpoint()
    def hello(self) -> dict[str, str]:
        return {"hello": "after a slow start"}
