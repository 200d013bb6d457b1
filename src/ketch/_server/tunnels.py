"""Tunnels: a TCP port on the gateway's host for a port inside a sandbox (SPEC X2), each
connection relayed to the unix socket that the sandbox's agent forwards to that port.

The relay is plain TCP, so HTTP, WebSockets and any other protocol pass unchanged. When
the gateway has a TLS certificate, a tunnel for an encrypted port terminates TLS with it
(its URL is https); otherwise its URL is plain http, and says so.
"""

from __future__ import annotations

import asyncio
import ssl
from collections import defaultdict

from ketch._runtime.agent import relay_bytes


class Tunnels:
    def __init__(self, host: str, tls: ssl.SSLContext | None) -> None:
        self.host = host
        self.tls = tls
        self._servers: dict[str, list[asyncio.Server]] = defaultdict(list)

    async def open(self, owner: str, target: str, encrypted: bool) -> tuple[str, int]:
        """A listener relaying to the unix socket `target`; (host, port) it listens on."""

        async def relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                up_r, up_w = await asyncio.open_unix_connection(target)
            except OSError:
                writer.close()
                return
            await asyncio.gather(relay_bytes(reader, up_w), relay_bytes(up_r, writer))

        tls = self.tls if encrypted else None
        server = await asyncio.start_server(relay, self.host, 0, ssl=tls)
        self._servers[owner].append(server)
        bound = server.sockets[0].getsockname()
        return self.host, int(bound[1])

    def close(self, owner: str, port: int | None = None) -> None:
        """Close `owner`'s tunnels, or the one listening on `port`."""
        kept = []
        for server in self._servers.pop(owner, []):
            if port is None or server.sockets[0].getsockname()[1] == port:
                server.close()
            else:
                kept.append(server)
        if kept:
            self._servers[owner] = kept

    async def close_all(self) -> None:
        for owner in list(self._servers):
            self.close(owner)
