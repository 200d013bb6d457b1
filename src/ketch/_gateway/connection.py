"""One client connection to the gateway: parses its requests and serves them one at a time.

Callbacks carry the bytes: asyncio's (the socket) and httptools' (the parsed request). Each
complete request head becomes an Exchange queued for serving.py; the connection's state,
flow control and closing are in client_base.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from typing import cast

import httptools

from ketch._gateway.exchange import QUEUED, RESOLVING, Exchange
from ketch._gateway.http import BadRequest, analyse_head, forwarding, is_websocket, parse_host
from ketch._gateway.resolver import RequestHead
from ketch._gateway.serving import Serving
from ketch._gateway.upstream import HIGH_WATER, LOW_WATER

__all__ = ["ClientConnection"]


class ClientConnection(Serving):
    """A client's connection: requests are parsed as they come, served strictly in order."""

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
