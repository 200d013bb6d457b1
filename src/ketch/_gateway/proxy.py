"""The gateway's data plane: a streaming HTTP/1.1 and WebSocket reverse proxy to containers.

Routing, proxy auth and container choice stay outside, behind the resolver: the proxy
parses a request head, asks the resolver where it goes, and moves bytes both ways with
back-pressure. `Expect: 100-continue` is forwarded; the container's server answers it.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import time
from collections.abc import Callable

from ketch._gateway.client_base import STATUS_KEYS
from ketch._gateway.connection import ClientConnection
from ketch._gateway.http import Limits
from ketch._gateway.longrequests import LongRequests, owner_of
from ketch._gateway.resolver import Denied, Ready, RequestHead, Resolver, Target
from ketch._gateway.upstream import Pool

__all__ = ["Denied", "Gateway", "Limits", "Ready", "RequestHead", "Resolver", "Target"]

_STAT_NAMES = (
    "connections",
    "requests",
    *STATUS_KEYS[1:],
    "denied",
    "bad_requests",
    "timeouts",
    "client_gone",
    "upstream_connects",
    "upstream_reused",
    "upstream_retries",
    "upstream_errors",
    "websockets",
    "long_requests",
)


class Gateway:
    """Accepts client connections on any number of listening sockets and proxies their
    requests to wherever the resolver says."""

    def __init__(
        self,
        resolver: Resolver,
        limits: Limits = Limits(),
        trusted_proxies: frozenset[str] = frozenset(),
    ) -> None:
        self.resolver = resolver
        self.limits = limits
        self.trusted_proxies = trusted_proxies
        self.stats: dict[str, int] = dict.fromkeys(_STAT_NAMES, 0)
        self._pool = Pool(limits, self.stats)
        self.results = LongRequests(limits, self.stats)  # detached long requests (W14)
        # Names the endpoint a detached request is for; its result is read there only.
        self.owner_of: Callable[[RequestHead], str] = owner_of
        self._servers: list[asyncio.AbstractServer] = []
        self._connections: set[ClientConnection] = set()
        self._sweeper: asyncio.TimerHandle | None = None

    async def serve(
        self, sock: socket.socket, tls: ssl.SSLContext | None = None
    ) -> asyncio.AbstractServer:
        """Accept connections on `sock` (bound; listening or not) until `close`; with `tls`,
        HTTPS: the handshake comes first, within the head timeout."""
        loop = asyncio.get_running_loop()
        port = sock.getsockname()[1] if sock.family in (socket.AF_INET, socket.AF_INET6) else 0
        sock.setblocking(False)

        def factory() -> ClientConnection:
            return ClientConnection(self, loop, port)

        server = await loop.create_server(
            factory,
            sock=sock,
            backlog=1024,
            ssl=tls,
            ssl_handshake_timeout=self.limits.head_timeout if tls is not None else None,
        )
        self._servers.append(server)
        if self._sweeper is None:
            self._sweeper = loop.call_later(1.0, self._sweep)
        return server

    def forget(self, address: str) -> None:
        """Close idle pooled connections to `address`, e.g. when its container stops."""
        self._pool.forget(address)

    async def close(self) -> None:
        """Stop accepting, drop every connection and wait for in-flight requests to release."""
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for server in self._servers:
            server.close()
        tasks = [t for c in list(self._connections) for t in c.shutdown()]
        tasks += self.results.close()  # before the pool: their targets are released here
        self._pool.close()
        await asyncio.sleep(0)  # let the aborted connections report, releasing their targets
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        for server in self._servers:
            await server.wait_closed()
        self._servers.clear()

    def _sweep(self) -> None:
        loop = asyncio.get_running_loop()
        now = time.monotonic()
        self._pool.sweep(now)
        self.results.sweep(now)
        self._sweeper = loop.call_later(1.0, self._sweep)
