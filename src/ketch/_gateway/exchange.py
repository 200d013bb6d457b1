"""One request and its response as they cross the gateway: the state both connections share."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from ketch._gateway.http import Forwarding, HeadFacts
    from ketch._gateway.longrequests import ResultSink
    from ketch._gateway.resolver import RequestHead, Target
    from ketch._gateway.upstream import Upstream

__all__ = ["BACKPRESSURE", "QUEUED", "RESOLVING", "UPGRADING", "Client", "Exchange"]

# Why the client connection's reading is paused; reading resumes when no reason is left.
RESOLVING = 1  # waiting for the resolver or an upstream connection: hold the body back
BACKPRESSURE = 2  # the upstream's write buffer is full
QUEUED = 4  # a pipelined request waits behind the one in flight
UPGRADING = 8  # a websocket upgrade waits for the container's 101

_IDEMPOTENT = frozenset({b"GET", b"HEAD", b"OPTIONS", b"DELETE", b"PUT", b"TRACE"})


class Client(Protocol):
    """What an upstream connection needs of the client connection it answers."""

    transport: asyncio.Transport
    write_paused: bool

    def pause(self, reason: int) -> None: ...
    def resume(self, reason: int) -> None: ...
    def enter_tunnel(self, upstream: Upstream) -> None: ...
    def close(self) -> None: ...
    def exchange_ended(self, ex: Exchange, outcome: str) -> None: ...


class Exchange:
    """A request in flight: its framing facts, its body on the way, its response's progress."""

    __slots__ = (
        "body_done",
        "body_size",
        "chunked",
        "client",
        "close_client",
        "destination",
        "ended",
        "error",
        "facts",
        "forward_head",
        "fwd",
        "has_body",
        "head",
        "http10",
        "is_head_method",
        "keep_alive",
        "method",
        "pending",
        "reject",
        "retried",
        "retryable",
        "sink",
        "started",
        "target",
        "task",
        "tunnel_data",
        "upstream",
        "websocket",
    )

    def __init__(
        self,
        client: Client,
        method: bytes,
        target: bytes,
        *,
        http10: bool,
        keep_alive: bool,
        chunked: bool,
        has_body: bool,
        websocket: bool,
    ) -> None:
        self.client = client
        self.method = method
        self.target = target  # the request target as sent upstream
        self.http10 = http10
        self.keep_alive = keep_alive
        self.chunked = chunked
        self.has_body = has_body
        self.websocket = websocket
        self.is_head_method = method == b"HEAD"
        # A websocket's early frames are not kept for a second attempt.
        self.retryable = not has_body and not websocket and method in _IDEMPOTENT
        self.retried = False
        self.head: RequestHead | None = None  # what the resolver is shown
        self.facts: HeadFacts | None = None
        self.fwd: Forwarding | None = None
        self.destination: Target | None = None  # where the resolver sent it
        self.forward_head = b""
        self.body_done = False
        self.body_size = 0
        self.pending: list[bytes] = []  # upstream-framed body bytes waiting for an upstream
        self.upstream: Upstream | None = None
        self.started = False  # a final response head went to the client
        self.close_client = False  # close the client connection once this exchange ends
        self.ended = False
        self.task: asyncio.Task[None] | None = None  # resolving or connecting, when it waits
        self.tunnel_data = b""
        self.error: tuple[int, str] | None = None  # a fault found mid-way: status, message
        self.reject: tuple[int, str] | None = None  # answer this without asking the resolver
        # Set when the request outlived the request timeout and its client got a 303: the
        # response goes to this sink (also `client` then) instead (W14).
        self.sink: ResultSink | None = None

    def send_body(self, data: bytes) -> None:
        """Pass on one piece of the request body, framed for the upstream."""
        if self.chunked:
            data = b"%x\r\n%b\r\n" % (len(data), data)
        up = self.upstream
        if up is not None:
            up.write(data)
        else:
            self.pending.append(data)

    def end_body(self) -> None:
        self.body_done = True
        if self.chunked:
            up = self.upstream
            if up is not None:
                up.write(b"0\r\n\r\n")
            else:
                self.pending.append(b"0\r\n\r\n")

    def resolve(self, outcome: str) -> None:
        """The upstream side is done with this exchange, for the reason `outcome`."""
        self.client.exchange_ended(self, outcome)
