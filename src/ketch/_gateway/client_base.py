"""A client connection's state, and what it does without regard to any one request: pausing
its reading (for one reason or several, see exchange.py) and the lingering close.

The connection is one object made of three layers, each a module: this one; serving.py,
which serves the parsed requests in turn; and connection.py, the asyncio and parser
callbacks. The layers are classes of a single inheritance line, so a method call costs what
it did when they were one class.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import TYPE_CHECKING, cast

import httptools

if TYPE_CHECKING:
    from ketch._gateway.exchange import Exchange
    from ketch._gateway.http import Forwarding
    from ketch._gateway.proxy import Gateway
    from ketch._gateway.upstream import Upstream

__all__ = ["STATUS_KEYS", "ClientBase"]

STATUS_KEYS = (
    "responses_1xx",
    "responses_1xx",
    "responses_2xx",
    "responses_3xx",
    "responses_4xx",
    "responses_5xx",
)

# How long a closing connection may go without the client reading or closing.
_LINGER = 2.0


class ClientBase(asyncio.Protocol):
    """A client connection's state, its flow control and its closing."""

    def __init__(self, gateway: Gateway, loop: asyncio.AbstractEventLoop, port: int) -> None:
        self._gw = gateway
        self._stats = gateway.stats
        self._loop = loop
        self._limits = gateway.limits
        self._port = port
        self.transport = cast(asyncio.Transport, None)
        self.write_paused = False
        self._parser = httptools.HttpRequestParser(self)
        self._peer: tuple[str, int] = ("", 0)
        self._tls = False  # HTTPS: the gateway terminates TLS on this connection
        self._paused = 0  # reasons reading is paused, see exchange.py
        self._active: Exchange | None = None  # the request being served
        self._parsing: Exchange | None = None  # the request whose body is being parsed
        self._queue: deque[Exchange] = deque()  # parsed requests waiting their turn
        self._pumping = False
        self._upgrade: Exchange | None = None
        self._url = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._head_size = 0  # request line + headers, as the parser reported them
        self._head_bytes = 0  # raw bytes received while a head is awaited
        # Raw bytes of a body since the parser last passed on body data: past the limit, they
        # are trailer fields (or chunk framing) piling up in the parser, never data.
        self._since_body = 0
        self._in_head = True
        self._begun = False  # part of a request head has arrived
        self._host_raw = b""  # the last Host value and its parse: a connection rarely varies
        self._host = ""
        self._fwd: Forwarding | None = None  # the last request's forwarding, and its Host
        self._fwd_host: bytes | None = None
        self._trusted_peer = False
        # One deadline (0: none) for the head or the idle keep-alive, checked by a timer that
        # is moved only when the deadline comes earlier: requests on a kept connection move
        # the deadline, not the timer.
        self._deadline = 0.0
        self._idle = False  # the deadline is the keep-alive one
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0
        self._linger_timer: asyncio.TimerHandle | None = None
        # When the request in flight gets a 303 unless its response has begun (W14); 0: none.
        # The same timer serves it: the common path only stores a number.
        self._req_deadline = 0.0
        self._stop = False  # parse no further request on this connection
        self._gone = False
        self._shutting = False  # the gateway is closing: outcomes read "cancelled"
        self._tunnel: Upstream | None = None
        self._draining = False  # closing: input is read and dropped until the client closes
        self._unsent = 0

    def pause(self, reason: int) -> None:
        if self._draining:
            return
        if not self._paused and not self._gone:
            self.transport.pause_reading()
        self._paused |= reason

    def resume(self, reason: int) -> None:
        if self._paused & reason and not self._draining:
            self._paused &= ~reason
            if not self._paused and not self._gone:
                self.transport.resume_reading()

    def _cancel_timer(self) -> None:
        self._deadline = 0.0
        self._idle = False

    def close(self) -> None:
        """End the connection after what was written reaches the client.

        A lingering close, as nginx and Apache do: closing a socket that still holds unread
        input makes the kernel send a reset, which can destroy the answer (a 413, a
        websocket's close frame) before the client reads it. So: send FIN once the buffer is
        flushed, discard whatever still comes, and close when the client does or goes quiet.
        """
        self._stop = True
        self._tunnel = None
        self._cancel_timer()
        t = self.transport
        if self._draining or self._gone or t.is_closing():
            return
        if not t.can_write_eof():
            # TLS transports cannot half-close, so no lingering: close() sends what is
            # buffered and the close_notify alert, then closes.
            t.close()
            return
        self._draining = True
        t.write_eof()
        if self._paused:
            self._paused = 0
            t.resume_reading()
        self._unsent = t.get_write_buffer_size()
        self._linger_timer = self._loop.call_later(_LINGER, self._linger)

    def _linger(self) -> None:
        self._linger_timer = None
        t = self.transport
        unsent = t.get_write_buffer_size()
        if unsent and unsent < self._unsent:
            # Still flushing to a slow reader: it is reading, so wait on.
            self._unsent = unsent
            self._linger_timer = self._loop.call_later(_LINGER, self._linger)
            return
        t.abort()

    def shutdown(self) -> list[asyncio.Task[None]]:
        """Drop the connection now (the gateway is closing); the tasks still to finish."""
        tasks = [ex.task for ex in (self._active,) if ex is not None and ex.task is not None]
        self._shutting = True
        self._cancel_timer()
        self.transport.abort()
        return tasks

    def _gone_outcome(self) -> str:
        return "cancelled" if self._shutting else "client_gone"

    def _flow_upstream(self) -> Upstream | None:
        if self._tunnel is not None:
            return self._tunnel
        return self._active.upstream if self._active is not None else None
