"""The gateway's proxy in a test process (this is not an app): a Gateway on a loop thread
behind a fake resolver, in front of uvicorn on a unix socket or a scripted raw upstream.

Shared by the proxy tests and the framing tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import uvicorn
import uvloop

from ketch._gateway.proxy import Denied, Gateway, Limits, RequestHead

WS_MAX = 2 * 1024 * 1024


class UvicornThread:
    """uvicorn serving an app on a unix socket from a thread of the test process."""

    def __init__(self, app: Any, path: Path) -> None:
        config = uvicorn.Config(
            app,
            uds=str(path),
            log_level="warning",
            lifespan="off",
            http="httptools",
            ws="websockets-sansio",
            ws_max_size=WS_MAX,
        )
        self.server = uvicorn.Server(config)
        self.address = f"unix:{path}"
        self._thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> UvicornThread:
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self._thread.join(10)


# -- the gateway under test, with a fake resolver -----------------------------------------


@dataclass
class FakeTarget:
    address: str
    remove_headers: frozenset[bytes]
    outcomes: list[str]

    def release(self, outcome: str) -> None:
        self.outcomes.append(outcome)


@dataclass
class FakeResolver:
    address: str
    heads: list[RequestHead] = field(default_factory=list)
    releases: list[str] = field(default_factory=list)
    delay: float = 0.0
    cancelled: threading.Event = field(default_factory=threading.Event)

    async def __call__(self, head: RequestHead) -> FakeTarget | Denied:
        self.heads.append(head)
        if head.target.startswith("/denied"):
            return Denied(403, "not for you", [("x-ketch-reason", "test")])
        if head.target.startswith("/broken-resolver"):
            raise RuntimeError("resolver bug")
        if head.target.startswith("/cold"):
            try:
                await asyncio.sleep(30)  # a container that takes its time to start
            except asyncio.CancelledError:
                self.cancelled.set()
                raise
        if self.delay:
            await asyncio.sleep(self.delay)
        address = self.address
        if head.target.startswith("/dead"):
            address = "unix:/nonexistent/ketch-test.sock"
        return FakeTarget(address, frozenset({b"ketch-key", b"ketch-secret"}), self.releases)


class GatewayThread:
    """A Gateway on 127.0.0.1:<free port>, on a uvloop loop in a thread of its own."""

    def __init__(
        self,
        resolver: FakeResolver,
        limits: Limits = Limits(),
        trusted: frozenset[str] = frozenset(),
    ) -> None:
        self.resolver = resolver
        self.loop = uvloop.new_event_loop()
        self.gateway = Gateway(resolver, limits, trusted)
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.port = 0

    def __enter__(self) -> GatewayThread:
        self._thread.start()
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        asyncio.run_coroutine_threadsafe(self.gateway.serve(sock), self.loop).result(5)
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self.gateway.close(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def stats(self) -> dict[str, int]:
        return dict(self.gateway.stats)

    def raw(self) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=10)
        return sock


class RawUpstream:
    """A scripted HTTP server on a unix socket: `script(conn, n)` serves connection n."""

    def __init__(self, path: Path, script: Callable[[socket.socket, int], None]) -> None:
        self.address = f"unix:{path}"
        self._sock = socket.socket(socket.AF_UNIX)
        self._sock.bind(str(path))
        self._sock.listen()
        self._script = script
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._workers: list[threading.Thread] = []

    def _accept(self) -> None:
        n = 0
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            worker = threading.Thread(target=self._serve, args=(conn, n), daemon=True)
            worker.start()
            self._workers.append(worker)
            n += 1

    def _serve(self, conn: socket.socket, n: int) -> None:
        with conn, contextlib.suppress(OSError):
            self._script(conn, n)

    def __enter__(self) -> RawUpstream:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._sock.shutdown(socket.SHUT_RDWR)
        self._sock.close()
        self._thread.join(5)
        for worker in self._workers:
            worker.join(5)


def read_head(conn: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(4096)
        if not chunk:
            break
        data += chunk
    return data
