"""Serving a web function inside its container: build the ASGI app, run it on a socket.

The gateway forwards each request to this server. It trusts the gateway's
`x-ketch-client` header for the caller's address (nothing else can reach the socket).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import socket
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Any, Any], Awaitable[None]]

WS_MAX_SIZE = 2 * 1024 * 1024


def client_address_middleware(app: ASGIApp) -> ASGIApp:
    async def wrapped(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] in ("http", "websocket"):
            headers = scope.get("headers") or []
            kept = []
            for name, value in headers:
                if name == b"x-ketch-client":
                    scope["client"] = (value.decode("latin-1"), 0)
                else:
                    kept.append((name, value))
            scope["headers"] = kept
        await app(scope, receive, send)

    return wrapped


def fastapi_app(fn: Callable[..., Any], web: dict[str, Any]) -> Any:
    """One route at `/` for the configured method; FastAPI does validation (422) and 405."""
    from fastapi import FastAPI
    from fastapi.middleware.cors import CORSMiddleware

    docs = bool(web.get("docs"))
    app = FastAPI(
        docs_url="/docs" if docs else None,
        redoc_url="/redoc" if docs else None,
        openapi_url="/openapi.json" if docs else None,
    )
    app.add_api_route("/", fn, methods=[web["method"]])
    app.add_middleware(
        CORSMiddleware, allow_origins=["*"], allow_methods=["*"], allow_headers=["*"],
        allow_credentials=False,
    )
    return app


def wsgi_to_asgi(wsgi: Any, threads: int) -> Any:
    from a2wsgi import WSGIMiddleware

    return WSGIMiddleware(wsgi, workers=max(1, threads))


def build_app(fn: Callable[..., Any], web: dict[str, Any], max_inputs: int) -> Any:
    kind = web["type"]
    if kind == "fastapi":
        return fastapi_app(fn, web)
    if kind == "asgi":
        app = fn()
        if inspect.isawaitable(app):
            raise TypeError("@asgi_app functions must return the app, not a coroutine")
        return app
    if kind == "wsgi":
        return wsgi_to_asgi(fn(), max_inputs)
    raise ValueError(f"unknown web type {kind!r}")


class WebServer:
    """A uvicorn server for the user's app on a unix socket of the container's own."""

    def __init__(self, app: Any, path: str, lifespan: bool) -> None:
        import uvicorn

        config = uvicorn.Config(
            client_address_middleware(app), lifespan="on" if lifespan else "off",
            ws_max_size=WS_MAX_SIZE, log_level="warning", access_log=False,
            proxy_headers=False, server_header=False, date_header=True,
            timeout_keep_alive=300, timeout_graceful_shutdown=5,
        )
        self.server = uvicorn.Server(config)
        # The runtime owns the signals; uvicorn must not replace its handlers.
        self.server.capture_signals = contextlib.nullcontext  # type: ignore[method-assign,assignment]
        self.path = path
        self.task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        with contextlib.suppress(FileNotFoundError):
            import os

            os.unlink(self.path)
        sock.bind(self.path)
        sock.listen(1024)
        self.task = asyncio.ensure_future(self.server.serve(sockets=[sock]))
        while not self.server.started:
            if self.task.done():
                self.task.result()  # raises the lifespan/startup error
                raise RuntimeError("the web server stopped while starting")
            await asyncio.sleep(0.005)

    async def stop(self) -> None:
        self.server.should_exit = True
        if self.task is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.task, 10)


async def wait_for_port(port: int, timeout: float) -> None:
    """`web_server`: traffic may flow once the user's server accepts on its port."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"nothing accepted connections on port {port} within {timeout:g}s "
                    "(web_server startup_timeout)"
                ) from None
            await asyncio.sleep(0.02)
            continue
        writer.close()
        return
