"""The contract between the proxy and whoever routes its requests: what a resolver is shown
and what it may answer."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol

__all__ = ["Denied", "Ready", "RequestHead", "Resolver", "Target"]


@dataclass(slots=True)
class RequestHead:
    """A request as the resolver sees it: the head only, its body not yet read."""

    method: str
    target: str  # raw request target, path + query
    headers: list[tuple[bytes, bytes]]  # as received, names lower-cased
    host: str | None  # Host header without port, lower-cased
    local_port: int  # the gateway port the request came in on
    # The caller: the peer, or, when the peer is a trusted proxy, the nearest untrusted
    # address in X-Forwarded-For (port 0 then).
    client: tuple[str, int]
    is_upgrade: bool  # a websocket upgrade request
    status: int = 0  # the response status sent to the client, once sent (for call records)


@dataclass
class Denied:
    """A platform answer instead of forwarding; its body is sent as `ketch: <message>`."""

    status: int
    message: str
    headers: list[tuple[str, str]] = field(default_factory=list)


@dataclass(slots=True)
class Ready:
    """A complete response the gateway holds itself (a long request's kept result, W14):
    sent as is, framed by the gateway."""

    status: int
    head: bytes  # status line and fields, each line ending in CRLF; no framing fields
    body: bytes

    def encode(self, *, close: bool, head_only: bool = False) -> bytes:
        framing = b"" if self.status in (204, 304) else b"content-length: %d\r\n" % len(self.body)
        if close:
            framing += b"connection: close\r\n"
        data = self.head + framing + b"\r\n"
        return data if head_only else data + self.body


class Target(Protocol):
    """Where the resolver sends a request: one container's HTTP server.

    `release` is called exactly once per request when its exchange ends (for a websocket,
    when the connection ends) with one of: ``ok``, ``client_gone``, ``upstream_error``,
    ``client_error`` (a malformed or oversized body mid-stream), ``cancelled`` (the gateway
    closed).
    """

    address: str  # "unix:/path/to.sock" or "host:port"
    remove_headers: frozenset[bytes]  # request headers dropped before forwarding

    def release(self, outcome: str) -> None: ...


# Runs in a task of its own per request. Its await is cancelled if the client disconnects
# while it waits (a container starting, a queue): clean up on CancelledError.
Resolver = Callable[[RequestHead], Awaitable["Target | Denied | Ready"]]
