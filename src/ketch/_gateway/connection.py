"""One client connection to the gateway: parses its requests and serves them one at a time.

Callbacks carry the bytes; a task is made per request only to run the resolver (eagerly on
Python 3.12+, so that a resolver that answers at once costs no extra turn of the loop) and
to open a new upstream connection. The resolver thus always runs inside a task, as asyncio
code expects (asyncio.timeout, TaskGroup and anyio need one).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import sys
from collections import deque
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any, cast

import httptools

from ketch._gateway.exchange import BACKPRESSURE, QUEUED, RESOLVING, UPGRADING, Exchange
from ketch._gateway.http import (
    BadRequest,
    Forwarding,
    analyse_head,
    forward_request_head,
    forwarding,
    is_websocket,
    parse_host,
    platform_response,
)
from ketch._gateway.longrequests import CALL_ID_PARAMS, redirect, result_id, still_running
from ketch._gateway.resolver import Denied, Ready, RequestHead, Target
from ketch._gateway.upstream import HIGH_WATER, LOW_WATER, Upstream, UpstreamUnavailable

if TYPE_CHECKING:
    from ketch._gateway.proxy import Gateway

__all__ = ["STATUS_KEYS", "ClientConnection"]

log = logging.getLogger("ketch.gateway")

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


if sys.version_info >= (3, 12):

    def _start_task(
        loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, None]
    ) -> asyncio.Task[None]:
        return asyncio.Task(coro, loop=loop, eager_start=True)

else:

    def _start_task(
        loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, None]
    ) -> asyncio.Task[None]:
        return loop.create_task(coro)


class ClientConnection(asyncio.Protocol):
    """A client's connection: requests are parsed as they come, served strictly in order."""

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

    # -- asyncio callbacks ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = t = cast(asyncio.Transport, transport)
        self._tls = t.get_extra_info("sslcontext") is not None
        peer = t.get_extra_info("peername")
        if isinstance(peer, tuple):
            self._peer = (str(peer[0]), int(peer[1]))
            sock = t.get_extra_info("socket")
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        else:
            self._peer = ("unix", 0)  # a unix-socket listener: name it in trusted_proxies
        self._trusted_peer = self._peer[0] in self._gw.trusted_proxies
        t.set_write_buffer_limits(HIGH_WATER, LOW_WATER)
        self._gw._connections.add(self)
        self._stats["connections"] += 1
        self._arm(self._limits.head_timeout)

    def data_received(self, data: bytes) -> None:
        if self._draining:
            return
        tunnel = self._tunnel
        if tunnel is not None:
            tunnel.write(data)
            return
        if self._stop:
            return
        if self._in_head:
            self._head_bytes += len(data)
        else:
            self._since_body += len(data)
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            self._upgraded(data[exc.args[0] :])
        except httptools.HttpParserError as exc:
            self._refuse(400, f"malformed request ({exc})")
        limit = self._limits.max_head_bytes
        if self._in_head and self._head_bytes > limit:
            self._refuse(431, "request head too large")
        elif self._since_body > limit:
            self._refuse(431, "request trailer fields (or chunk framing) too large")
        if self._idle and self._begun:
            self._arm(self._limits.head_timeout)  # a head began on an idle connection
        if self._active is None and self._queue:
            self._pump()
        active = self._active
        if active is not None and active.upstream is None and not active.body_done:
            # Until there is somewhere to send it, hold the body back in the socket.
            self.pause(RESOLVING)

    def eof_received(self) -> bool | None:
        # A client that half-closes is treated as gone, as nginx does: its response is
        # abandoned and the app sees the disconnect.
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._gone = self._stop = True
        self._cancel_timer()
        for timer in (self._timer, self._linger_timer):
            if timer is not None:
                timer.cancel()
        self._gw._connections.discard(self)
        ex = self._active
        if ex is None:
            return
        up = ex.upstream
        if self._tunnel is not None and up is not None:
            up.close()  # flushes what the client sent last, its close frame included
            ex.resolve("ok")
        elif up is not None:
            up.abort()
            ex.resolve(self._gone_outcome())
        elif ex.task is not None:
            ex.task.cancel()  # stops the resolver's wait or the connecting
        else:
            self._end(ex, self._gone_outcome())

    def pause_writing(self) -> None:
        self.write_paused = True
        up = self._flow_upstream()
        if up is not None:
            up.pause_reading()

    def resume_writing(self) -> None:
        self.write_paused = False
        up = self._flow_upstream()
        if up is not None:
            up.resume_reading()

    # -- parser callbacks -------------------------------------------------------------------

    def on_message_begin(self) -> None:
        self._url = b""
        self._headers = []
        self._head_size = 0
        self._begun = True
        if self._active is not None or self._queue:
            self.pause(QUEUED)

    def on_url(self, url: bytes) -> None:
        self._url += url
        self._head_size += len(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name.lower(), value))
        self._head_size += len(name) + len(value) + 4

    def on_headers_complete(self) -> None:
        if self._stop:
            return
        self._in_head = self._begun = False
        self._cancel_timer()
        headers = self._headers
        # Trailer fields of a chunked body come through on_header too: they go to a list of
        # their own, never forwarded, and count with the head against its limit.
        self._headers = []
        if self._head_size > self._limits.max_head_bytes:
            self._refuse(431, "request head too large")
            return
        parser = self._parser
        method = parser.get_method()
        version = parser.get_http_version()
        http10 = version == "1.0"
        target = self._url
        try:
            if not http10 and version != "1.1":
                raise BadRequest(505, f"HTTP/{version} is not supported; use HTTP/1.1")
            if method == b"CONNECT":
                raise BadRequest(405, "CONNECT is not supported")
            facts = analyse_head(headers)
            if http10 and facts.chunked:
                # RFC 9112 §6.1: an HTTP/1.0 message's Transfer-Encoding means faulty framing.
                raise BadRequest(400, "Transfer-Encoding in an HTTP/1.0 request")
            authority = facts.host
            if target[:1] != b"/" and target != b"*":
                # Absolute form: its authority wins over Host (RFC 9112 §3.2.2); the app
                # gets the origin form.
                scheme, sep, rest = target.partition(b"://")
                if not sep or scheme.lower() not in (b"http", b"https"):
                    raise BadRequest(400, "invalid request target")
                authority, slash, path = rest.partition(b"/")
                target = slash + path or b"/"
            if authority is None:
                if not http10:
                    raise BadRequest(400, "missing Host header")
                host = None
            elif authority == self._host_raw:
                host = self._host
            else:
                host = self._host = parse_host(authority)
                self._host_raw = authority
            length = facts.content_length
            if length is not None and length > self._limits.max_body_bytes:
                raise BadRequest(
                    413, f"request body over the limit of {self._limits.max_body_bytes} bytes"
                )
        except BadRequest as exc:
            self._refuse(exc.status, exc.message)
            return
        except ValueError:
            self._refuse(400, "malformed request head")
            return
        upgrade = parser.should_upgrade()
        if upgrade and (facts.chunked or length):
            # The parser hands what follows an upgrade head over unread, a body included: it
            # would go to the container as a request nobody checked, or not at all.
            self._refuse(400, "a request asking to upgrade the connection cannot have a body")
            return
        websocket = upgrade and method == b"GET" and not http10 and is_websocket(facts.upgrade)
        peer = self._peer
        fwd = self._fwd
        if fwd is None or facts.host != self._fwd_host or self._trusted_peer:
            # From an untrusted peer, who the request is from depends on the connection
            # and the Host only: kept while the Host stays the same.
            fwd = forwarding(peer[0], facts, self._gw.trusted_proxies)
            if self._tls and (facts.forwarded_proto is None or not self._trusted_peer):
                fwd.proto = b"https"  # what the client used, unless a trusted proxy says more
            self._fwd, self._fwd_host = fwd, facts.host
        ex = Exchange(
            self,
            method,
            target,
            http10=http10,
            keep_alive=parser.should_keep_alive(),
            chunked=facts.chunked,
            has_body=facts.chunked or bool(length),
            websocket=websocket,
        )
        ex.facts = facts
        ex.fwd = fwd
        ex.head = RequestHead(
            method.decode("ascii"),
            target.decode("latin-1"),
            headers,
            host,
            self._port,
            (fwd.client, peer[1] if fwd.client == peer[0] else 0),
            websocket,
        )
        if upgrade:
            self._upgrade = ex
            # Another protocol (h2c, ...) is not switched to: served as plain HTTP, then the
            # connection ends, since what the client sends next is not HTTP/1.1.
            ex.close_client = not websocket
        self._parsing = ex
        self._stats["requests"] += 1
        # Served once the parser is done with this read (see data_received), so that a
        # request without a body is complete before anything is decided about it.
        self._queue.append(ex)

    def on_body(self, body: bytes) -> None:
        self._since_body = 0
        ex = self._parsing
        if ex is None or self._stop:
            return
        ex.body_size += len(body)
        if ex.body_size > self._limits.max_body_bytes:
            self._refuse(413, f"request body over the limit of {self._limits.max_body_bytes} bytes")
            return
        ex.send_body(body)

    def on_message_complete(self) -> None:
        ex = self._parsing
        if ex is None or self._stop:
            return
        if self._headers and self._head_size > self._limits.max_head_bytes:
            self._refuse(431, "request trailer fields too large")  # the body went bad
            return
        self._parsing = None
        self._in_head = True
        self._head_bytes = self._since_body = 0
        ex.end_body()
        if not ex.keep_alive or ex.close_client:
            self._stop = True  # the parser would refuse what follows anyway

    # -- used by the upstream side ----------------------------------------------------------

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

    def enter_tunnel(self, upstream: Upstream) -> None:
        """The container accepted the upgrade: from now on bytes pass unparsed both ways,
        starting with those held since the handshake."""
        self._tunnel = upstream
        self._stop = True
        self._cancel_timer()
        ex = upstream.exchange
        if ex is not None and ex.tunnel_data:
            upstream.write(ex.tunnel_data)
            ex.tunnel_data = b""
        self.resume(RESOLVING | QUEUED | UPGRADING)
        self._stats["websockets"] += 1

    def exchange_ended(self, ex: Exchange, outcome: str) -> None:
        """The upstream side finished `ex`: answer for a failure if still possible, go on."""
        if ex.ended:
            return
        if outcome == "retry" and not ex.retried and not self._gone:
            ex.retried = True
            self._stats["upstream_retries"] += 1
            self._spawn(ex, self._open(ex))
            return
        if outcome in ("retry", "upstream_error"):
            outcome = "upstream_error"
            self._stats["upstream_errors"] += 1
            message = ex.error[1] if ex.error else "the app closed the connection before answering"
            self._answer(ex, 502, message)
        elif outcome == "client_error" and ex.error is not None:
            self._answer(ex, *ex.error)
        self._end(ex, outcome)

    # -- serving ----------------------------------------------------------------------------

    def _pump(self) -> None:
        """Serve queued requests while none is in flight; when none is left, wait for one."""
        if self._pumping:
            return  # an exchange ended inside _begin: the loop below goes on
        self._pumping = True
        try:
            while self._active is None and not self._gone and not self._draining:
                if not self._queue:
                    if self._stop:
                        self.close()
                    else:
                        self.resume(QUEUED)
                        if self._begun:
                            self._arm(self._limits.head_timeout)
                        else:
                            self._arm(self._limits.keepalive_timeout)
                            self._idle = True
                    return
                ex = self._queue.popleft()
                if not self._queue and not self._begun:
                    self.resume(QUEUED)  # its body, if any, must be read
                self._active = ex
                self._begin(ex)
        finally:
            self._pumping = False

    def _begin(self, ex: Exchange) -> None:
        if ex.reject is not None:
            ex.close_client = True
            self._answer(ex, *ex.reject)
            self._end(ex, None)
            return
        when = self._req_deadline = self._loop.time() + self._limits.request_timeout
        if self._timer is None or self._timer_at > when:
            self._schedule(when)
        self._spawn(ex, self._resolve(ex))

    def _spawn(self, ex: Exchange, coro: Coroutine[Any, Any, None]) -> None:
        """Run `coro` for `ex`; while it waits, it is `ex.task` (cancelled if the client goes)."""
        task = _start_task(self._loop, coro)
        if not task.done():
            ex.task = task

    async def _resolve(self, ex: Exchange) -> None:
        assert ex.head is not None
        try:
            result = await self._gw.resolver(ex.head)
        except asyncio.CancelledError:
            ex.task = None
            self._end(ex, None)
            return
        except Exception:
            ex.task = None
            log.exception("the gateway's resolver failed on %s %s", ex.head.method, ex.head.target)
            self._answer(ex, 500, "internal error while routing the request")
            self._end(ex, None)
            return
        ex.task = None
        self._resolved(ex, result)

    def _resolved(self, ex: Exchange, result: Target | Denied | Ready) -> None:
        if isinstance(result, (Denied, Ready)):
            if isinstance(result, Ready):
                self._send_ready(ex, result)
            else:
                self._stats["denied"] += 1
                self._answer(ex, result.status, result.message, result.headers)
            self._end(ex, None)
            return
        ex.destination = result
        if self._gone and ex.sink is None:
            self._end(ex, self._gone_outcome())
            return
        assert ex.head is not None and ex.facts is not None and ex.fwd is not None
        ex.forward_head = forward_request_head(
            ex.method,
            ex.target,
            ex.head.headers,
            ex.facts,
            ex.fwd,
            remove=result.remove_headers,
            trusted_peer=self._trusted_peer,
            websocket=ex.websocket,
        )
        up = self._gw._pool.take(result.address)
        if up is not None:
            self._attach(ex, up)
        else:
            self._spawn(ex, self._open(ex))

    async def _open(self, ex: Exchange) -> None:
        assert ex.destination is not None
        try:
            up = await self._gw._pool.open(ex.destination.address)
        except UpstreamUnavailable as exc:
            ex.task = None
            self._stats["upstream_errors"] += 1
            self._answer(ex, 502, str(exc))
            self._end(ex, "upstream_error")
            return
        except asyncio.CancelledError:
            ex.task = None
            self._end(ex, self._gone_outcome())
            return
        ex.task = None
        if self._gone and ex.sink is None:
            self._gw._pool.put(up)
            self._end(ex, self._gone_outcome())
            return
        self._attach(ex, up)

    def _attach(self, ex: Exchange, up: Upstream) -> None:
        if ex.error is not None:  # the body went bad while the upstream was sought
            self._gw._pool.put(up)
            self._answer(ex, *ex.error)
            self._end(ex, "client_error")
            return
        up.start(ex, ex.forward_head)
        if ex.sink is None:
            self.resume(RESOLVING)

    def _end(self, ex: Exchange, outcome: str | None) -> None:
        """The exchange is over: release its target, then go on with the connection."""
        if ex.sink is not None:
            ex.sink.end(outcome)  # detached (W14): this connection moved on long ago
            return
        if ex.ended:
            return
        ex.ended = True
        if outcome == "client_gone":
            self._stats["client_gone"] += 1
        target = ex.destination
        if target is not None and outcome is not None:
            try:
                target.release(outcome)
            except Exception:
                log.exception("releasing the target of %s failed", ex.head)
        if self._active is ex:
            self._active = None
            self._req_deadline = 0.0
        if self._gone:
            return
        if self._tunnel is not None or not ex.started or ex.close_client or not ex.body_done:
            self.close()
            return
        self._pump()

    def _answer(
        self, ex: Exchange, status: int, message: str, headers: list[tuple[str, str]] | None = None
    ) -> None:
        """Send a platform answer for `ex`, unless its response has begun."""
        if ex.sink is not None:
            ex.sink.answer(status, message, headers)
            return
        if ex.started or self._gone:
            return
        close = (
            ex.close_client or not ex.body_done or not ex.keep_alive or ex.http10 or ex.websocket
        )
        try:
            data = platform_response(status, message, headers, close=close)
        except ValueError:
            log.exception("a platform answer could not be written")
            status = 500
            data = platform_response(500, "internal error", close=close)
        if ex.is_head_method:
            data = data[: data.index(b"\r\n\r\n") + 4]
        self.transport.write(data)
        ex.started = True
        if ex.head is not None:
            ex.head.status = status
        ex.close_client = close
        self._stats[STATUS_KEYS[min(status // 100, 5)]] += 1
        if close:
            self._stop = True

    def _send_ready(self, ex: Exchange, ready: Ready) -> None:
        """Send a complete response the gateway holds (a long request's result)."""
        if ex.started or self._gone:
            return
        close = not ex.keep_alive or ex.http10 or ex.close_client
        self.transport.write(ready.encode(close=close, head_only=ex.is_head_method))
        ex.started = True
        if ex.head is not None:
            ex.head.status = ready.status
        ex.close_client = close
        self._stats[STATUS_KEYS[min(ready.status // 100, 5)]] += 1
        if close:
            self._stop = True

    def _refuse(self, status: int, message: str) -> None:
        """Answer a request the gateway will not serve, in its turn, and end the connection."""
        if self._stop:
            return
        self._stop = True
        self._begun = False
        self._stats["bad_requests"] += 1
        ex = self._parsing
        if ex is not None and not ex.body_done:
            # The body of an accepted request went bad mid-stream.
            ex.close_client = True
            if ex is self._active:
                ex.error = (status, message)
                up = ex.upstream
                if up is not None:
                    up.abort()
                    ex.resolve("client_error")
            else:
                ex.reject = (status, message)
            return
        if self._active is None and not self._queue:
            self._stats[STATUS_KEYS[status // 100]] += 1
            self.transport.write(platform_response(status, message, close=True))
            self.close()
        else:
            ex = Exchange(
                self,
                b"",
                b"",
                http10=False,
                keep_alive=False,
                chunked=False,
                has_body=False,
                websocket=False,
            )
            ex.body_done = True
            ex.reject = (status, message)
            self._queue.append(ex)

    def _upgraded(self, rest: bytes) -> None:
        """The parser stopped at an upgrade: what follows the head is not HTTP/1.1.

        Those bytes are held, not sent: until the container's 101 they belong to no
        protocol, and a container that does not switch would read them as requests nobody
        checked. After a 101 they go into the tunnel; after any other answer they are
        dropped with the connection."""
        ex, self._upgrade = self._upgrade, None
        self._stop = True
        if ex is None or not ex.websocket or self._gone:
            return
        if rest:
            ex.tunnel_data += rest
        if self._tunnel is None:
            self.pause(UPGRADING)

    # -- timers and closing -----------------------------------------------------------------

    def _arm(self, delay: float) -> None:
        when = self._loop.time() + delay
        self._deadline = when
        self._idle = False
        if self._timer is None or self._timer_at > when:
            self._schedule(when)

    def _schedule(self, when: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self._loop.call_at(when, self._on_timer)
        self._timer_at = when

    def _cancel_timer(self) -> None:
        self._deadline = 0.0
        self._idle = False

    def _on_timer(self) -> None:
        self._timer = None
        if self._gone:
            return
        now = self._loop.time() + 0.002
        if self._req_deadline and now >= self._req_deadline:
            self._req_deadline = 0.0
            self._on_request_timeout()
        if self._deadline and now >= self._deadline and not self._gone:
            self._deadline = 0.0
            self._on_timeout()
        # Deadlines moved on meanwhile, or were set by what ran above: wait for the next.
        later = [d for d in (self._deadline, self._req_deadline) if d]
        if later and not self._gone:
            when = min(later)
            if self._timer is None or self._timer_at > when:
                self._schedule(when)

    def _on_request_timeout(self) -> None:
        """No response head within the request timeout: unless it cannot be, the request is
        detached and its client redirected to the result URL (W14). A response that has
        begun (a stream), a websocket, a body still arriving and a result URL itself are
        left alone."""
        ex = self._active
        if (
            ex is None
            or ex.started
            or ex.ended
            or ex.websocket
            or not ex.body_done
            or ex.sink is not None
            or self._tunnel is not None
            or self._draining
            or ex.head is None
            or result_id(ex.head.target) is not None
        ):
            return
        close = not ex.keep_alive or ex.http10 or ex.close_client
        call_id = self._gw.results.detach(ex, self._gw.owner_of(ex.head))
        if call_id is None:
            return  # no room to keep another response: the client waits on
        target = ex.head.target
        location = f"{target}{'&' if '?' in target else '?'}{CALL_ID_PARAMS[0]}={call_id}"
        data = redirect(location, still_running(self._limits.request_timeout)).encode(
            close=close, head_only=ex.is_head_method
        )
        self.transport.write(data)
        self._stats["responses_3xx"] += 1
        if close:
            self._stop = True
        # The exchange goes on without this connection: it no longer holds back reading,
        # and a paused write side must not hold back the upstream now read into the sink.
        self._active = None
        self.resume(RESOLVING | BACKPRESSURE)
        up = ex.upstream
        if up is not None and self.write_paused:
            up.resume_reading()
        self._pump()

    def _on_timeout(self) -> None:
        if self._gone or self._active is not None or self._tunnel is not None:
            return
        if self._begun:
            # A head that started but did not finish in time: a slow or stuck client.
            self._stats["timeouts"] += 1
            self._stats["responses_4xx"] += 1
            self.transport.write(
                platform_response(408, "timed out waiting for the request head", close=True)
            )
        self.close()

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
