"""Raw-socket HTTP for the gateway's smuggling and fuzz tests (this is not an app): send
bytes exactly as given, parse what comes back into responses, note whether the gateway
closed the connection."""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass, field

import httptools

WS_KEY = b"dGhlIHNhbXBsZSBub25jZQ=="


@dataclass
class Response:
    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("latin-1")

    def header(self, name: bytes) -> bytes | None:
        for key, value in self.headers:
            if key.lower() == name:
                return value
        return None


@dataclass
class Reply:
    """What one connection got back."""

    responses: list[Response] = field(default_factory=list)
    closed: bool = False  # the gateway ended the connection (FIN or reset)
    upgraded: bool = False  # a 101 came, and what follows it is the tunnel's
    garbage: bytes = b""  # bytes that do not parse as an HTTP response
    tail: bytes = b""  # bytes after a 101
    raw: bytes = b""  # everything received

    @property
    def statuses(self) -> list[int]:
        return [r.status for r in self.responses]


class ResponseParser:
    """Responses parsed from bytes as they arrive on one connection, into a Reply."""

    def __init__(self, reply: Reply) -> None:
        self.reply = reply
        self._headers: list[tuple[bytes, bytes]] = []
        self._body = b""
        self._status = 0
        self._parser = httptools.HttpResponseParser(self)
        self._broken = False
        self._open = False  # a final response's head came, its end not yet

    def on_message_begin(self) -> None:
        self._headers = []
        self._body = b""
        self._open = False

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        self._status = self._parser.get_status_code()
        self._open = self._status >= 200

    def on_body(self, body: bytes) -> None:
        self._body += body

    def on_message_complete(self) -> None:
        self._open = False
        if self._status >= 200 or self._status == 101:
            self.reply.responses.append(Response(self._status, self._headers, self._body))

    def feed(self, data: bytes) -> None:
        reply = self.reply
        reply.raw += data
        if reply.upgraded:
            reply.tail += data
            return
        if self._broken:
            reply.garbage += data
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            reply.upgraded = True
            if not reply.responses or reply.responses[-1].status != 101:
                reply.responses.append(Response(101, self._headers, b""))
            reply.tail += data[exc.args[0] :]
        except httptools.HttpParserError:
            self._broken = True
            reply.garbage += data

    def finish(self) -> None:
        """The connection ended: a body delimited by its end is complete now (a body cut
        short looks the same here; the tests that care look at the framing fields)."""
        if self._open and not self._broken and not self.reply.upgraded:
            self.reply.responses.append(Response(self._status, self._headers, self._body))


def exchange(
    port: int,
    data: bytes | list[bytes],
    *,
    want: int | None = None,
    timeout: float = 10.0,
    pause: float = 0.0,
) -> Reply:
    """Send `data` (pieces sent apart, `pause` seconds between) to 127.0.0.1:`port` and read
    until the connection closes, `want` responses or a 101 have come, or `timeout` passes."""
    reply = Reply()
    parser = ResponseParser(reply)
    pieces = [data] if isinstance(data, bytes) else data
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        try:
            for i, piece in enumerate(pieces):
                if i and pause:
                    time.sleep(pause)
                sock.sendall(piece)
        except OSError:
            reply.closed = True  # refused mid-way: what was answered is still readable
        deadline = time.monotonic() + timeout
        while want is None or len(reply.responses) < want:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            sock.settimeout(left)
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                break
            except OSError:
                reply.closed = True
                break
            if not chunk:
                reply.closed = True
                break
            parser.feed(chunk)
            if reply.upgraded:
                break  # the rest is the tunnel's, not HTTP
        if reply.closed:
            parser.finish()
    return reply


def request(
    method: str,
    target: str,
    host: str,
    *,
    headers: dict[str, str] | None = None,
    body: bytes = b"",
    version: str = "1.1",
) -> bytes:
    """A well-formed request; Content-Length is added when there is a body."""
    lines = [f"{method} {target} HTTP/{version}", f"Host: {host}"]
    for name, value in (headers or {}).items():
        lines.append(f"{name}: {value}")
    if body:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def websocket_upgrade(target: str, host: str, headers: dict[str, str] | None = None) -> bytes:
    return request(
        "GET",
        target,
        host,
        headers={
            "Upgrade": "websocket",
            "Connection": "Upgrade",
            "Sec-WebSocket-Key": WS_KEY.decode(),
            "Sec-WebSocket-Version": "13",
            **(headers or {}),
        },
    )
