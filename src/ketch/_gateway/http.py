"""HTTP/1.1 message pieces for the gateway: limits, head analysis and rewriting, ketch answers."""

from __future__ import annotations

import re
from dataclasses import dataclass
from http import HTTPStatus

__all__ = [
    "HOP_BY_HOP",
    "BadRequest",
    "Forwarding",
    "HeadFacts",
    "Limits",
    "analyse_head",
    "forward_request_head",
    "forwarding",
    "is_websocket",
    "parse_host",
    "platform_response",
    "response_chunked",
    "response_problem",
    "rewrite_response_head",
    "switches_to_websocket",
]


@dataclass(frozen=True)
class Limits:
    """Bounds the gateway holds every client and upstream connection to."""

    max_head_bytes: int = 64 * 1024  # request line + headers; over → 431 and close
    max_body_bytes: int = 4 * 1024**3  # declared Content-Length over it → 413, body unread
    head_timeout: float = 30.0  # a head must arrive within this → else 408 and close
    keepalive_timeout: float = 75.0  # an idle client connection is closed after this
    upstream_connect_timeout: float = 10.0
    # Below the container server's own keep-alive timeout (uvicorn's default is 5 s), so that
    # the gateway, not the container, closes an idle pooled connection: a request is then
    # never written onto a connection the other side is closing.
    upstream_idle_timeout: float = 4.0
    max_idle_per_upstream: int = 64
    max_response_head_bytes: int = 64 * 1024
    # Long requests (W14): a request with no response head after this many seconds gets a
    # 303 to its result URL, which waits as long again per visit.
    request_timeout: float = 150.0
    result_retention: float = 600.0  # a finished long request's response is kept this long
    max_kept_bytes: int = 256 * 1024**2  # all long-request responses, buffered or kept


class BadRequest(Exception):
    """A request head the gateway refuses; carries the status to answer with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


# RFC 9110 §7.6.1: fields that describe one connection, not the message. Transfer-Encoding is
# handled apart: the gateway frames bodies itself.
HOP_BY_HOP = frozenset(
    {b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer", b"upgrade"}
)

# Whatever the client sent under these names is replaced by the gateway's own values.
_REPLACED = frozenset(
    {
        b"transfer-encoding",
        b"content-length",
        b"x-ketch-client",
        b"x-forwarded-for",
        b"x-forwarded-proto",
        b"x-forwarded-host",
    }
)
_DROP = HOP_BY_HOP | _REPLACED
# From a peer that is not a trusted proxy, RFC 7239's header would let a client claim any
# origin to an app that reads it.
_DROP_UNTRUSTED = _DROP | {b"forwarded"}

_HOST = re.compile(rb"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-._~%!$&'()*+,;=]*)(?::[0-9]*)?")


def parse_host(value: bytes) -> str:
    """The host of a Host header (or absolute-form authority) without its port, lower-cased."""
    match = _HOST.fullmatch(value.strip())
    if match is None:
        raise BadRequest(400, "invalid Host header")
    return match.group(1).decode("ascii").lower()


@dataclass(slots=True)
class HeadFacts:
    """What the gateway needs to know of a request head, gathered in one pass."""

    host: bytes | None = None
    content_length: int | None = None
    chunked: bool = False
    connection: frozenset[bytes] = frozenset()
    upgrade: bytes | None = None
    forwarded_for: list[bytes] | None = None
    forwarded_proto: bytes | None = None
    forwarded_host: bytes | None = None


def _tokens(value: bytes) -> list[bytes]:
    return [t.strip().lower() for t in value.split(b",") if t.strip()]


def is_websocket(upgrade: bytes | None) -> bool:
    """An Upgrade field that asks for WebSocket and nothing else (RFC 6455 §4.1)."""
    return upgrade is not None and _tokens(upgrade) == [b"websocket"]


def analyse_head(headers: list[tuple[bytes, bytes]]) -> HeadFacts:
    """Scan lower-cased headers for framing, routing and forwarding facts; raise BadRequest
    where RFC 9112 says a server must refuse the message."""
    facts = HeadFacts()
    connection: list[bytes] = []
    codings: list[bytes] | None = None
    seen_host = False
    for name, value in headers:
        if name == b"host":
            if seen_host:
                raise BadRequest(400, "more than one Host header")
            seen_host = True
            facts.host = value
        elif name == b"content-length":
            # The parser already refused conflicting or malformed lengths; a repeat with the
            # same value is what remains.
            facts.content_length = int(value.strip())
        elif name == b"transfer-encoding":
            if codings is None:
                codings = []
            codings.extend(_tokens(value))
        elif name == b"connection":
            connection.extend(_tokens(value))
        elif name == b"upgrade":
            facts.upgrade = value
        elif name == b"x-forwarded-for":
            if facts.forwarded_for is None:
                facts.forwarded_for = []
            facts.forwarded_for.append(value)
        elif name == b"x-forwarded-proto":
            facts.forwarded_proto = value
        elif name == b"x-forwarded-host":
            facts.forwarded_host = value
    if connection:
        facts.connection = frozenset(connection)
    if codings:
        # RFC 9112 §6.3: chunked must be the final coding, applied once, or the length
        # cannot be known: refused. A well-formed chain with other codings is only
        # unsupported.
        if codings[-1] != b"chunked" or codings.count(b"chunked") != 1:
            raise BadRequest(400, "invalid Transfer-Encoding: chunked must be the final coding")
        if len(codings) != 1:
            raise BadRequest(501, "only the chunked transfer coding is supported")
        facts.chunked = True
    return facts


@dataclass(slots=True)
class Forwarding:
    """Who the request is from, and the X-Forwarded-* values to send on."""

    client: str
    forwarded_for: str
    proto: bytes
    host: bytes | None
    _fields: bytes = b""

    def fields(self) -> bytes:
        """The forwarding fields as sent, ending the head; made once (a client connection
        reuses one Forwarding for its requests while nothing about them changes)."""
        if not self._fields:
            parts = [
                b"x-ketch-client: ",
                self.client.encode("latin-1"),
                b"\r\nx-forwarded-for: ",
                self.forwarded_for.encode("latin-1"),
                b"\r\nx-forwarded-proto: ",
                self.proto,
            ]
            if self.host is not None:
                parts += (b"\r\nx-forwarded-host: ", self.host)
            parts.append(b"\r\n\r\n")
            self._fields = b"".join(parts)
        return self._fields


def forwarding(peer: str, facts: HeadFacts, trusted: frozenset[str]) -> Forwarding:
    """Apply the trusted-proxy rule: an incoming X-Forwarded-For is extended and believed only
    when the peer is a configured proxy; otherwise the peer is the client."""
    if peer not in trusted:
        return Forwarding(peer, peer, b"http", facts.host)
    chain: list[str] = []
    for value in facts.forwarded_for or ():
        chain.extend(p.strip() for p in value.decode("latin-1").split(",") if p.strip())
    # The client is the nearest hop that is not itself a trusted proxy; hops further left
    # could have been written by anyone.
    client = peer
    for hop in reversed(chain):
        client = hop
        if hop not in trusted:
            break
    return Forwarding(
        client,
        ", ".join([*chain, peer]),
        facts.forwarded_proto or b"http",
        facts.forwarded_host or facts.host,
    )


def forward_request_head(
    method: bytes,
    target: bytes,
    headers: list[tuple[bytes, bytes]],
    facts: HeadFacts,
    fwd: Forwarding,
    *,
    remove: frozenset[bytes],
    trusted_peer: bool,
    websocket: bool,
) -> bytes:
    """The request head as sent to the container: HTTP/1.1, hop-by-hop fields and `remove`
    dropped, forwarding fields set by the gateway."""
    drop = _DROP if trusted_peer else _DROP_UNTRUSTED
    if remove or facts.connection:
        drop = drop | remove | facts.connection
    parts = [method, b" ", target, b" HTTP/1.1\r\n"]
    for name, value in headers:
        if name not in drop:
            parts += (name, b": ", value, b"\r\n")
    # The framing fields are the gateway's own, written from what it parsed: the container
    # then reads the body exactly as the gateway does, whatever the client's spelling.
    if facts.chunked:
        parts.append(b"transfer-encoding: chunked\r\n")
    elif facts.content_length is not None:
        parts.append(b"content-length: %d\r\n" % facts.content_length)
    if websocket:
        parts.append(b"connection: upgrade\r\nupgrade: websocket\r\n")
    parts.append(fwd.fields())
    return b"".join(parts)


_HOP_FIELD = re.compile(rb"\r\n(?:connection|keep-alive|proxy-connection|te|trailer|upgrade):")


def _header_names(lower_head: bytes) -> list[bytes]:
    return [line.split(b":", 1)[0] for line in lower_head.split(b"\r\n")[1:]]


def rewrite_response_head(
    raw: bytes,
    *,
    close: bool,
    keep_alive: bool = False,
    dechunk: bool = False,
    upgrade: bool = False,
    lower: bytes | None = None,
) -> bytes:
    """The container's response head as sent to the client.

    Hop-by-hop fields are dropped (Connection and Upgrade kept for a 101), then
    `connection: close` is added when the gateway will close the client connection, or
    `connection: keep-alive` for an HTTP/1.0 client it keeps. `dechunk` drops
    Transfer-Encoding for a client that cannot read chunked framing. `lower` is `raw`
    lower-cased, when the caller has it already.
    """
    if lower is None:
        lower = raw.lower()
    # Fast path, taken by most responses: nothing to remove, nothing to add.
    if not (close or keep_alive or dechunk) and _HOP_FIELD.search(lower) is None:
        return raw
    lines = raw[:-4].split(b"\r\n")
    names = _header_names(lower[:-4])
    drop = set(HOP_BY_HOP)
    for name, line in zip(names, lines[1:], strict=True):
        if name.strip() == b"connection":
            drop.update(_tokens(line.split(b":", 1)[1].lower()))
    if upgrade:
        drop -= {b"connection", b"upgrade"}
    if dechunk:
        drop.add(b"transfer-encoding")
    kept = [lines[0]]
    kept += (line for name, line in zip(names, lines[1:], strict=True) if name.strip() not in drop)
    if close:
        kept.append(b"connection: close")
    elif keep_alive:
        kept.append(b"connection: keep-alive")
    kept.append(b"\r\n")
    return b"\r\n".join(kept)


_TE_FIELD = re.compile(rb"\r\ntransfer-encoding:([^\r]*)")
_UPGRADE_WEBSOCKET = re.compile(rb"\r\nupgrade:[ \t]*websocket[ \t]*\r\n")


def response_problem(raw: bytes, status: int) -> str | None:
    """Why a container's response head cannot be passed on, or None. The parser already
    refused what RFC 9112 forbids outright (bare CR or LF, folding, conflicting lengths);
    these are what it lets through that a client could read differently."""
    if not raw.startswith((b"HTTP/1.1 ", b"HTTP/1.0 ")):
        return f"the app answered in another protocol ({raw[:9]!r})"
    if not 100 <= status <= 599:
        return f"the app answered with the status {status}"
    return None


def response_chunked(lower: bytes) -> bool | None:
    """For a response head with Transfer-Encoding: whether its body is chunked (else it
    runs to the connection's end, RFC 9112 §6.3), or None when chunked is applied twice."""
    codings = [t for value in _TE_FIELD.findall(lower) for t in _tokens(value)]
    if codings.count(b"chunked") > 1:
        return None
    return bool(codings) and codings[-1] == b"chunked"


def switches_to_websocket(lower: bytes) -> bool:
    """Whether a 101 head says what it switches to is WebSocket."""
    return _UPGRADE_WEBSOCKET.search(lower) is not None


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return ""


def platform_response(
    status: int,
    message: str,
    headers: list[tuple[str, str]] | None = None,
    *,
    close: bool,
) -> bytes:
    """A complete response written by ketch itself: `ketch: <message>` in plain text."""
    body = f"ketch: {message}\n".encode()
    lines = [
        f"HTTP/1.1 {status} {_reason(status)}",
        "content-type: text/plain; charset=utf-8",
        f"content-length: {len(body)}",
    ]
    for name, value in headers or ():
        if any(c in name or c in value for c in "\r\n\0"):
            raise ValueError(f"header {name!r} holds a line break")
        lines.append(f"{name}: {value}")
    if close:
        lines.append("connection: close")
    head = "\r\n".join(lines).encode("latin-1") + b"\r\n\r\n"
    return head + body
