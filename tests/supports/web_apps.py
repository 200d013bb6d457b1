"""Whole web apps for the web tests: ASGI apps with WebSockets (W11) and a plain WSGI
callable served on threads (W3).

Only ketch and the standard library at the top; the frameworks are imported where the
app is built, inside the container.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

import ketch

app = ketch.App("ketch-web-apps")

WSGI_SLEEP = 1.0


@app.function(max_containers=1)
@ketch.concurrent(max_inputs=4)
@ketch.wsgi_app()
def wsgi_sleeper() -> Callable[..., Iterable[bytes]]:
    """A bare WSGI callable: each request sleeps, then says which process and thread served
    it and when it started and ended."""

    def application(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        started = time.time()
        time.sleep(WSGI_SLEEP)
        body = (
            f"{os.getpid()} {threading.get_ident()} {environ['REQUEST_METHOD']} "
            f"{environ.get('PATH_INFO', '')} {started:.3f} {time.time():.3f}"
        ).encode()
        start_response(
            "200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))]
        )
        return [body]

    return application


@app.function()
@ketch.concurrent(max_inputs=4)
@ketch.asgi_app()
def sockets() -> Any:
    from starlette.applications import Starlette
    from starlette.routing import Route, WebSocketRoute
    from starlette.websockets import WebSocket, WebSocketDisconnect

    async def echo(ws: WebSocket) -> None:
        await ws.accept()
        try:
            while True:
                message = await ws.receive()
                if message["type"] == "websocket.disconnect":
                    return
                if message.get("text") is not None:
                    await ws.send_text(message["text"])
                else:
                    await ws.send_bytes(message["bytes"])
        except WebSocketDisconnect:
            return

    async def hello(request: Any) -> Any:
        from starlette.responses import PlainTextResponse

        return PlainTextResponse("hello over http")

    return Starlette(routes=[Route("/", hello), WebSocketRoute("/ws", echo)])


@app.function(max_containers=1)
@ketch.asgi_app()
def one_at_a_time() -> Any:
    """One input per container and one container: an open WebSocket holds the only slot."""
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route, WebSocketRoute
    from starlette.websockets import WebSocket, WebSocketDisconnect

    async def hold(ws: WebSocket) -> None:
        await ws.accept()
        try:
            while True:
                await ws.send_text(await ws.receive_text())
        except WebSocketDisconnect:
            return

    async def ping(request: Any) -> PlainTextResponse:
        return PlainTextResponse("pong")

    return Starlette(routes=[Route("/", ping), WebSocketRoute("/ws", hold)])
