"""Serving a web function inside its container: build the ASGI app, run it on a socket.

The gateway forwards each request to this server. It trusts the gateway's
`x-ketch-client` header for the caller's address (nothing else can reach the socket).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import socket
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, MutableMapping
from typing import Any

from ketch._utils import tracecontext
from ketch._utils.protocol.container import ContainerWeb

Scope = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Any, Any], Awaitable[None]]

WS_MAX_SIZE = 2 * 1024 * 1024


def client_address_middleware(app: ASGIApp) -> ASGIApp:
    async def wrapped(scope: Scope, receive: Any, send: Any) -> None:
        traceparent = None
        if scope["type"] in ("http", "websocket"):
            headers = scope.get("headers") or []
            kept = []
            for name, value in headers:
                if name == b"x-ketch-client":
                    scope["client"] = (value.decode("latin-1"), 0)
                else:
                    if name == b"traceparent":
                        traceparent = value
                    kept.append((name, value))
            scope["headers"] = kept
        # The request's trace context (O5) is current while the app handles it, so that
        # user code using OpenTelemetry joins the caller's trace without instrumenting.
        token = None
        if traceparent is not None and tracecontext.is_traceparent(
            text := traceparent.decode("latin-1")
        ):
            token = tracecontext.attach(text)
        try:
            await app(scope, receive, send)
        finally:
            if token is not None:
                tracecontext.detach(token)

    return wrapped


def fastapi_app(fn: Callable[..., Any], web: ContainerWeb) -> Any:
    """One route at `/` for the configured method; FastAPI does validation (422) and 405."""
    from fastapi import FastAPI
    from fastapi.middleware.cors import CORSMiddleware

    docs = web.docs
    app = FastAPI(
        docs_url="/docs" if docs else None,
        redoc_url="/redoc" if docs else None,
        openapi_url="/openapi.json" if docs else None,
    )
    app.add_api_route("/", fn, methods=[web.method])
    app.add_middleware(
        CORSMiddleware,
        allow_origins=["*"],
        allow_methods=["*"],
        allow_headers=["*"],
        allow_credentials=False,
    )
    return app


def close_abandoned_streams() -> None:
    """Make a Starlette `StreamingResponse` close its body as soon as the response ends,
    also when it ends early because the client went away.

    On a disconnect Starlette just stops asking the body for items. An async generator is
    then closed whenever the garbage collector gets to it, and a sync iterator (which
    Starlette reads on worker threads) is never told at all: its `finally` does not run and
    a `.remote_gen()` it reads stays open. Closing both at once is what lets a disconnect
    cancel a streaming handler (SPEC W10). Idempotent.
    """
    from starlette import responses

    cls: Any = responses.StreamingResponse
    if getattr(cls, "_ketch_closes_body", False):
        return
    if hasattr(responses, "iterate_in_threadpool"):
        # StreamingResponse wraps a sync iterator with this module-level helper.
        responses.iterate_in_threadpool = _iterate_closing
    respond = cls.__call__

    async def call(self: Any, scope: Scope, receive: Any, send: Any) -> None:
        try:
            await respond(self, scope, receive, send)
        finally:
            aclose = getattr(self.body_iterator, "aclose", None)
            if aclose is not None:
                with contextlib.suppress(Exception):  # e.g. a generator still running
                    await aclose()

    cls.__call__ = call
    cls._ketch_closes_body = True


async def _iterate_closing(iterator: Iterable[Any]) -> AsyncIterator[Any]:
    """A sync iterator's items, each fetched on a worker thread; closed when this is."""
    import anyio

    it = iter(iterator)
    end = object()
    try:
        while True:
            item = await anyio.to_thread.run_sync(next, it, end)
            if item is end:
                return
            yield item
    finally:
        close = getattr(it, "close", None)
        if close is not None:
            # Also on the way out of a cancellation: the close must still happen, and on a
            # thread, since a generator's cleanup may block.
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(close)


def wsgi_to_asgi(wsgi: Any, threads: int) -> Any:
    from a2wsgi import WSGIMiddleware

    return WSGIMiddleware(wsgi, workers=max(1, threads))


def build_app(fn: Callable[..., Any], web: ContainerWeb, max_inputs: int) -> Any:
    kind = web.type
    if kind == "fastapi":
        close_abandoned_streams()
        return fastapi_app(fn, web)
    if kind == "asgi":
        app = fn()
        if inspect.isawaitable(app):
            raise TypeError("@asgi_app functions must return the app, not a coroutine")
        if "starlette.responses" in sys.modules:  # the app is built on Starlette (FastAPI)
            close_abandoned_streams()
        return app
    if kind == "wsgi":
        return wsgi_to_asgi(fn(), max_inputs)
    raise ValueError(f"unknown web type {kind!r}")


class WebServer:
    """A uvicorn server for the user's app on a unix socket of the container's own."""

    def __init__(self, app: Any, path: str, lifespan: bool) -> None:
        import uvicorn

        config = uvicorn.Config(
            client_address_middleware(app),
            lifespan="on" if lifespan else "off",
            ws_max_size=WS_MAX_SIZE,
            log_level="warning",
            access_log=False,
            proxy_headers=False,
            server_header=False,
            date_header=True,
            timeout_keep_alive=300,
            timeout_graceful_shutdown=5,
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


async def wait_for_port(
    port: int, timeout: float, started: asyncio.Future[Any] | None = None
) -> str:
    """`web_server`: traffic may flow once the user's server accepts on `port`. Returns the
    loopback address that accepted (a server may listen on IPv4, IPv6 or both). `started`
    is the user's function, still running or done: if it fails first, its error is raised."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        if started is not None and started.done():
            started.result()  # raises what the function raised
        for host in ("127.0.0.1", "::1"):
            try:
                _, writer = await asyncio.wait_for(
                    asyncio.open_connection(host, port), max(0.05, deadline - loop.time())
                )
            except (OSError, TimeoutError):
                continue
            writer.close()
            return host
        if loop.time() >= deadline:
            state = (
                "the function is still running"
                if started is not None and not started.done()
                else "the function returned without a server on that port"
            )
            raise TimeoutError(
                f"web_server: nothing accepted connections on port {port} within "
                f"startup_timeout={timeout:g}s ({state}); start the server on port {port}, "
                "listening on 0.0.0.0, 127.0.0.1 or ::"
            )
        await asyncio.sleep(0.02)


class PortBridge:
    """`web_server`: the gateway's connections arrive on a unix socket and are piped, byte
    for byte, to the user's server on its port. Being a byte pipe, it carries WebSocket
    upgrades and anything else over HTTP/1.1. The user's port lives in the container's own
    network namespace (several containers may use the same port); the socket lives on the
    filesystem, where the gateway reaches it."""

    def __init__(self, host: str, port: int, path: str) -> None:
        self.host = host
        self.port = port
        self.path = path
        self.server: asyncio.Server | None = None
        self._links: set[asyncio.Task[None]] = set()

    @classmethod
    async def start(cls, path: str, host: str, port: int) -> PortBridge:
        import os

        bridge = cls(host, port, path)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        bridge.server = await asyncio.start_unix_server(
            bridge._link, path, backlog=1024, limit=2**18
        )
        return bridge

    async def _link(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._links.add(task)
        up_writer: asyncio.StreamWriter | None = None
        try:
            try:
                up_reader, up_writer = await asyncio.open_connection(
                    self.host, self.port, limit=2**18
                )
            except OSError:
                return  # the server went away: the gateway sees the close and answers 502
            sock = up_writer.get_extra_info("socket")
            if sock is not None:  # small writes (WebSocket frames) must not wait for Nagle
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            await asyncio.gather(
                _pipe(reader, up_writer, writer), _pipe(up_reader, writer, up_writer)
            )
        finally:
            self._links.discard(task)
            for w in (writer, up_writer):
                if w is not None:
                    w.close()

    async def stop(self) -> None:
        import os

        if self.server is not None:
            self.server.close()
        for task in list(self._links):
            task.cancel()
        if self._links:
            await asyncio.gather(*self._links, return_exceptions=True)
        with contextlib.suppress(OSError):
            os.unlink(self.path)


async def _pipe(
    src: asyncio.StreamReader, dst: asyncio.StreamWriter, other: asyncio.StreamWriter
) -> None:
    """Copy until EOF, then pass the half-close on (the other direction may still run). On
    an error both directions are dropped, as the peer of a reset connection expects."""
    try:
        while data := await src.read(2**18):
            dst.write(data)
            await dst.drain()
        if dst.can_write_eof():
            dst.write_eof()
    except (OSError, RuntimeError):
        # A reset on either side; RuntimeError: writing to a transport already closing.
        dst.transport.abort()
        other.transport.abort()
