"""Keep-alive connections to containers' HTTP servers: the proxy's response side, and the pool."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
from typing import cast

import httptools

from ketch._gateway.exchange import BACKPRESSURE, Exchange
from ketch._gateway.http import (
    Limits,
    response_chunked,
    response_problem,
    rewrite_response_head,
    switches_to_websocket,
)

__all__ = ["Pool", "Upstream", "UpstreamUnavailable"]

# Write-buffer marks for both sides: enough to keep a socket busy, small enough that a slow
# reader holds at most this much of a body in the gateway.
HIGH_WATER = 256 * 1024
LOW_WATER = 64 * 1024

_STATUS_KEYS = (
    "responses_1xx",
    "responses_1xx",
    "responses_2xx",
    "responses_3xx",
    "responses_4xx",
    "responses_5xx",
)

_TE = b"\r\ntransfer-encoding:"
_TE_CHUNKED = b"\r\ntransfer-encoding: chunked\r\n"

# Response states.
_IDLE, _HEAD, _RAW, _DECHUNK, _DONE, _TUNNEL = range(6)


class UpstreamUnavailable(Exception):
    """No connection to the container's HTTP server could be made."""


class Upstream(asyncio.Protocol):
    """One connection to a container's HTTP server, serving one exchange at a time.

    Response bytes go to the client as they arrive. The parser only finds the message's end;
    the body is passed on in its original framing, except for HTTP/1.0 clients, which get a
    chunked body decoded.
    """

    def __init__(self, pool: Pool, address: str) -> None:
        self.pool = pool
        self.address = address
        self.transport: asyncio.Transport | None = None
        self.exchange: Exchange | None = None
        self.closed = False
        self.idle_since = 0.0
        self.write_paused = False
        self._parser: httptools.HttpResponseParser | None = None
        self._state = _IDLE
        self._buf = b""  # response head bytes not yet passed on
        self._interim = False  # the head just parsed was a 1xx
        self._complete = False
        self._until_close = False  # body delimited by the connection's end
        self._got_bytes = False
        self._keep = False  # the server will keep the connection after this response
        self._overrun = False  # bytes came after the response's end: framing is broken
        self._out = b""  # what this read passes on to the client, once it parsed cleanly
        self._fd = -1  # a duplicate of the socket's descriptor, see _salvage
        self.reused = False  # set by the pool when the connection serves another request

    # -- asyncio callbacks ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = t = cast(asyncio.Transport, transport)
        sock = t.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        t.set_write_buffer_limits(HIGH_WATER, LOW_WATER)
        if sock is not None:
            with contextlib.suppress(OSError):
                self._fd = os.dup(sock.fileno())

    def data_received(self, data: bytes) -> None:
        state = self._state
        ex = self.exchange
        if ex is None:
            # Bytes on an idle connection: the server broke framing; it cannot be reused.
            self.close()
            return
        self._got_bytes = True
        if state == _TUNNEL:
            ex.client.transport.write(data)
            return
        if state == _HEAD:
            self._buf = self._buf + data if self._buf else data
        assert self._parser is not None
        # Parsed before any of it is passed on: bytes past the response's end (a second
        # response, to a request the gateway never sent) must not reach the client, where
        # they would answer its next request.
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            pass  # after a 101 the bytes are the tunnel's
        except httptools.HttpParserError as exc:
            if self.exchange is ex and self._state != _TUNNEL:
                self._fail(ex, f"the app sent a malformed response ({exc})")
                return
        if self.exchange is not ex:
            return
        if self._overrun:
            self._fail(ex, "the app sent more than one response to one request")
            return
        client = ex.client
        if state == _RAW:
            client.transport.write(data)
        elif self._out:
            out, self._out = self._out, b""
            client.transport.write(out)
            if self._state == _TUNNEL:
                client.enter_tunnel(self)
                return
        if self._complete:
            self._finish(ex, reusable=True)
        elif self._state == _HEAD and len(self._buf) > self.pool.limits.max_response_head_bytes:
            self._fail(ex, "the app's response head is too large")

    def eof_received(self) -> bool | None:
        return False  # close: a half-closed server connection is no use to the pool

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.pool.discard(self)
        fd, self._fd = self._fd, -1
        if fd >= 0:
            try:
                if exc is not None and self.exchange is not None:
                    self._salvage(fd)
            finally:
                os.close(fd)
        ex = self.exchange
        if ex is None:
            return
        self.exchange = None
        ex.upstream = None
        self._release_backpressure(ex)
        state = self._state
        self._state = _IDLE
        if state == _TUNNEL:
            ex.client.close()
            ex.resolve("ok")
        elif (state == _RAW and self._until_close) or state == _DONE or self._complete:
            ex.resolve("ok")  # a body delimited by the connection's end, now complete
        elif not ex.started and not self._got_bytes and self.reused and ex.retryable:
            # A pooled connection the server closed as the request was written: RFC 9110
            # §9.2.2 lets an idempotent request without a body be sent again.
            ex.resolve("retry")
        else:
            if ex.started:
                ex.close_client = True
            ex.resolve("upstream_error")

    def pause_writing(self) -> None:
        self.write_paused = True
        ex = self.exchange
        if ex is not None:
            ex.client.pause(BACKPRESSURE)

    def resume_writing(self) -> None:
        self.write_paused = False
        ex = self.exchange
        if ex is not None:
            ex.client.resume(BACKPRESSURE)

    # -- parser callbacks -------------------------------------------------------------------

    def on_message_begin(self) -> None:
        if self._complete:
            self._overrun = True

    def on_headers_complete(self) -> None:
        ex = self.exchange
        parser = self._parser
        if ex is None or parser is None or self._complete:
            return
        buf = self._buf
        end = buf.find(b"\r\n\r\n") + 4
        raw, rest = buf[:end], buf[end:]
        self._buf = b""
        status = parser.get_status_code()
        client = ex.client
        if status < 200 and status != 101:
            if status < 100:
                self._fail(ex, f"the app answered with the status {status}")
                return
            self._interim = True
            # RFC 9110 §15.2: no 1xx to an HTTP/1.0 client.
            if not ex.http10:
                client.transport.write(rewrite_response_head(raw, close=False))
            self._buf = rest  # the next head starts here; the parser carries on with it
            return
        lower = raw.lower()
        problem = None
        # The parser checked the status line's form (HTTP/, RTSP/ or ICE/, a version it
        # knows, digits): "H" and "1" make it HTTP/1.0 or HTTP/1.1, tested by bytes for
        # the hot path's sake.
        if status > 599 or raw[5] != 49 or raw[0] != 72:
            problem = response_problem(raw, status)
        chunked = False
        at = lower.find(_TE)
        if at >= 0:
            if lower.startswith(_TE_CHUNKED, at):
                # What servers send. (A second field is not looked for: were the codings
                # to end otherwise, the parser reads to the close, and so does the client.)
                chunked = True
            else:
                coding = response_chunked(lower)
                if coding is None:
                    problem = "the app's response applies chunked more than once"
                chunked = bool(coding)
        if problem is not None:
            self._fail(ex, problem)
            return
        framed = chunked or b"\r\ncontent-length:" in lower
        no_body = ex.is_head_method or status in (204, 304)
        tunnel = status == 101
        if tunnel and not (ex.websocket and switches_to_websocket(lower)):
            self._fail(ex, "the app switched protocols unasked")
            return
        if no_body and rest:
            self._overrun = True  # a body where there can be none
            return
        self._until_close = not framed and not no_body and not tunnel
        dechunk = ex.http10 and chunked and not no_body
        # An answer that comes before the request's body is all in (an early 413, or a
        # full-duplex stream) ends the connection after it: what is left of the body is not
        # worth reading to keep a connection.
        close = (
            ex.close_client
            or not ex.keep_alive
            or self._until_close
            or dechunk
            or (ex.websocket and not tunnel)
            or (not ex.body_done and not tunnel)
        )
        ex.close_client = close
        out = rewrite_response_head(
            raw,
            close=close and not tunnel,
            keep_alive=ex.http10 and not close,
            dechunk=dechunk,
            upgrade=tunnel,
            lower=lower,
        )
        ex.started = True
        if ex.head is not None:
            ex.head.status = status
        self.pool.stats[_STATUS_KEYS[status // 100]] += 1
        if no_body:
            self._state = _DONE
            self._complete = True
            self._keep = parser.should_keep_alive()
        elif dechunk:
            self._state = _DECHUNK  # the parser goes on with `rest` and hands it to on_body
        else:
            self._state = _TUNNEL if tunnel else _RAW
            # Head and the body's first bytes in one write: one segment, one system call.
            if rest:
                out += rest
        self._out = out  # written once the whole read has parsed

    def on_body(self, body: bytes) -> None:
        ex = self.exchange
        if self._state == _DECHUNK and ex is not None and not self._complete:
            if self._out:
                out, self._out = self._out, b""
                ex.client.transport.write(out)
            ex.client.transport.write(body)

    def on_message_complete(self) -> None:
        if self._interim:
            self._interim = False
        elif self._state != _TUNNEL:
            self._complete = True
            # Read now: the parser forgets it once the callback returns.
            self._keep = self._parser is not None and self._parser.should_keep_alive()

    # -- used by the client side ------------------------------------------------------------

    def start(self, ex: Exchange, head: bytes) -> None:
        """Serve `ex`: send its head and whatever body arrived meanwhile."""
        transport = self.transport
        assert transport is not None
        self.exchange = ex
        ex.upstream = self
        if self._parser is None:
            # One parser serves the connection's responses in turn: it resets itself after
            # each message.
            self._parser = httptools.HttpResponseParser(self)
        self._state = _HEAD
        self._buf = self._out = b""
        self._interim = self._complete = self._until_close = self._got_bytes = False
        self._keep = self._overrun = False
        if ex.pending:
            transport.writelines([head, *ex.pending])
            ex.pending.clear()
        else:
            transport.write(head)
        if ex.client.write_paused:
            transport.pause_reading()
        if self.write_paused:
            ex.client.pause(BACKPRESSURE)

    def write(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(data)

    def pause_reading(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.resume_reading()

    def abort(self) -> None:
        """Drop the connection at once, forgetting its exchange: the app sees a disconnect."""
        ex = self.exchange
        if ex is not None:
            self.exchange = None
            ex.upstream = None
            self._release_backpressure(ex)
        self.closed = True
        if self.transport is not None:
            self.transport.abort()

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    # -- internals --------------------------------------------------------------------------

    def _salvage(self, fd: int) -> None:
        """Pass on what the server sent before the connection broke on a write.

        A server that answers early and closes (a websocket's 1009 close frame, a 413 before
        the body is read) makes the next write fail, and the event loop then drops the
        connection without reading what arrived first. The duplicate descriptor still
        reaches those bytes.
        """
        left = 1 << 20
        while left > 0 and self.exchange is not None:
            try:
                data = os.read(fd, min(left, 65536))
            except OSError:
                return
            if not data:
                return
            left -= len(data)
            self.data_received(data)

    def _release_backpressure(self, ex: Exchange) -> None:
        if self.write_paused:
            ex.client.resume(BACKPRESSURE)

    def _finish(self, ex: Exchange, *, reusable: bool) -> None:
        # A handshake that got no 101 left the server unsure what the connection speaks.
        reusable = (
            reusable and self._keep and not self._until_close and ex.body_done and not ex.websocket
        )
        self.exchange = None
        ex.upstream = None
        if self._state == _DONE:
            # Completed by the gateway (a response to HEAD, a 204 or 304), the parser may
            # still wait for a body that never comes: start afresh.
            self._parser = None
        self._state = _IDLE
        self._release_backpressure(ex)
        if ex.client.write_paused and not self.closed:
            self.resume_reading()
        if reusable:
            self.pool.put(self)
        else:
            self.close()
        ex.resolve("ok")

    def _fail(self, ex: Exchange, message: str) -> None:
        if self._out:
            # The head parsed in this read was not passed on: the client can still get a 502.
            self._out = b""
            ex.started = False
        self.exchange = None
        ex.upstream = None
        self._release_backpressure(ex)
        self.abort()
        # The client's connection ends too: what it was sent of the response (if anything)
        # cannot be completed, and nothing more is trusted on a connection whose peer
        # broke framing.
        ex.close_client = True
        ex.error = (502, message)
        ex.resolve("upstream_error")


class Pool:
    """Idle keep-alive connections per container address, most recently used first."""

    def __init__(self, limits: Limits, stats: dict[str, int]) -> None:
        self.limits = limits
        self.stats = stats
        self._idle: dict[str, list[Upstream]] = {}
        self._all: set[Upstream] = set()

    def take(self, address: str) -> Upstream | None:
        """An idle connection to `address`, most recently used first, if there is one."""
        idle = self._idle.get(address)
        while idle:
            up = idle.pop()
            if not up.closed:
                up.reused = True
                self.stats["upstream_reused"] += 1
                return up
        return None

    async def open(self, address: str) -> Upstream:
        """A new connection to `address`; UpstreamUnavailable when none can be made."""
        loop = asyncio.get_running_loop()

        def factory() -> Upstream:
            return Upstream(self, address)

        try:
            async with asyncio.timeout(self.limits.upstream_connect_timeout):
                if address.startswith("unix:"):
                    _, proto = await loop.create_unix_connection(factory, address[5:])
                else:
                    host, _, port = address.rpartition(":")
                    _, proto = await loop.create_connection(factory, host.strip("[]"), int(port))
        except TimeoutError as exc:
            raise UpstreamUnavailable(
                f"the app did not accept a connection within "
                f"{self.limits.upstream_connect_timeout:g}s"
            ) from exc
        except (OSError, ValueError) as exc:
            raise UpstreamUnavailable(f"cannot connect to the app ({exc})") from exc
        self.stats["upstream_connects"] += 1
        self._all.add(proto)
        return proto

    def put(self, up: Upstream) -> None:
        if up.closed:
            return
        idle = self._idle.setdefault(up.address, [])
        if len(idle) >= self.limits.max_idle_per_upstream:
            up.close()
            return
        up.idle_since = time.monotonic()
        idle.append(up)

    def discard(self, up: Upstream) -> None:
        self._all.discard(up)
        idle = self._idle.get(up.address)
        if idle and up in idle:
            idle.remove(up)
            if not idle:
                del self._idle[up.address]

    def sweep(self, now: float) -> None:
        """Close connections idle longer than the upstream idle timeout."""
        cutoff = now - self.limits.upstream_idle_timeout
        for idle in list(self._idle.values()):
            # The list is ordered by when each connection went idle, oldest first.
            while idle and idle[0].idle_since < cutoff:
                idle.pop(0).close()
        for address in [a for a, idle in self._idle.items() if not idle]:
            del self._idle[address]

    def forget(self, address: str) -> None:
        """Close the idle connections to `address` (its container is going away)."""
        for up in self._idle.pop(address, []):
            up.close()

    def close(self) -> None:
        self._idle.clear()
        for up in list(self._all):
            up.abort()
        self._all.clear()
