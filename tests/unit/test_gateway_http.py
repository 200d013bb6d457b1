"""The gateway's pure HTTP pieces: head analysis, forwarding rules, head rewriting, answers."""

from __future__ import annotations

import httptools
import pytest

from ketch._gateway.http import (
    BadRequest,
    analyse_head,
    forward_request_head,
    forwarding,
    is_websocket,
    parse_host,
    platform_response,
    response_chunked,
    response_problem,
    rewrite_response_head,
    switches_to_websocket,
)


def _lines(head: bytes) -> list[bytes]:
    assert head.endswith(b"\r\n\r\n")
    return head[:-4].split(b"\r\n")


# -- parse_host -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "host"),
    [
        (b"Example.COM", "example.com"),
        (b"app--hello.localhost:8000", "app--hello.localhost"),
        (b"127.0.0.1:80", "127.0.0.1"),
        (b"[::1]:8000", "[::1]"),
        (b" spaced.example ", "spaced.example"),
    ],
)
def test_parse_host(value: bytes, host: str) -> None:
    assert parse_host(value) == host


@pytest.mark.parametrize("value", [b"a b", b"host:port", b"[::1", b"x/y", b"a:1:2"])
def test_parse_host_refuses_garbage(value: bytes) -> None:
    with pytest.raises(BadRequest) as info:
        parse_host(value)
    assert info.value.status == 400


# -- analyse_head -----------------------------------------------------------------------


def test_analyse_head_gathers_facts() -> None:
    facts = analyse_head(
        [
            (b"host", b"a.example"),
            (b"content-length", b"12"),
            (b"connection", b"keep-alive, X-Drop"),
            (b"connection", b"other"),
            (b"x-forwarded-for", b"1.1.1.1"),
            (b"x-forwarded-for", b"2.2.2.2"),
            (b"upgrade", b"websocket"),
        ]
    )
    assert facts.host == b"a.example"
    assert facts.content_length == 12
    assert facts.connection == {b"keep-alive", b"x-drop", b"other"}
    assert facts.forwarded_for == [b"1.1.1.1", b"2.2.2.2"]
    assert facts.upgrade == b"websocket"
    assert not facts.chunked


def test_analyse_head_refuses_two_hosts_and_unknown_codings() -> None:
    with pytest.raises(BadRequest) as info:
        analyse_head([(b"host", b"a"), (b"host", b"b")])
    assert info.value.status == 400
    with pytest.raises(BadRequest) as info:
        analyse_head([(b"transfer-encoding", b"gzip, chunked")])
    assert info.value.status == 501
    assert analyse_head([(b"transfer-encoding", b"Chunked")]).chunked


# -- forwarding -------------------------------------------------------------------------


def test_untrusted_peer_replaces_forwarded_for() -> None:
    facts = analyse_head(
        [(b"host", b"h:1"), (b"x-forwarded-for", b"6.6.6.6"), (b"x-forwarded-proto", b"https")]
    )
    fwd = forwarding("10.0.0.5", facts, frozenset({"10.0.0.1"}))
    assert (fwd.client, fwd.forwarded_for, fwd.proto, fwd.host) == (
        "10.0.0.5",
        "10.0.0.5",
        b"http",
        b"h:1",
    )


def test_trusted_peer_appends_and_names_the_nearest_untrusted_hop() -> None:
    trusted = frozenset({"10.0.0.1", "10.0.0.2"})
    facts = analyse_head(
        [
            (b"x-forwarded-for", b"6.6.6.6, 203.0.113.9"),
            (b"x-forwarded-for", b"10.0.0.2"),
            (b"x-forwarded-proto", b"https"),
            (b"x-forwarded-host", b"public.example"),
        ]
    )
    fwd = forwarding("10.0.0.1", facts, trusted)
    assert fwd.forwarded_for == "6.6.6.6, 203.0.113.9, 10.0.0.2, 10.0.0.1"
    assert fwd.client == "203.0.113.9"  # 6.6.6.6 could have been written by anyone
    assert fwd.proto == b"https"
    assert fwd.host == b"public.example"


def test_trusted_peer_without_forwarded_for_is_the_client() -> None:
    fwd = forwarding("10.0.0.1", analyse_head([]), frozenset({"10.0.0.1"}))
    assert (fwd.client, fwd.forwarded_for) == ("10.0.0.1", "10.0.0.1")


# -- forward_request_head ---------------------------------------------------------------


def _forward(
    headers: list[tuple[bytes, bytes]],
    *,
    remove: frozenset[bytes] = frozenset(),
    websocket: bool = False,
    trusted: bool = False,
) -> list[bytes]:
    facts = analyse_head(headers)
    fwd = forwarding("192.0.2.1", facts, frozenset({"192.0.2.1"}) if trusted else frozenset())
    return _lines(
        forward_request_head(
            b"POST",
            b"/p?q=1",
            headers,
            facts,
            fwd,
            remove=remove,
            trusted_peer=trusted,
            websocket=websocket,
        )
    )


def test_forwarded_head_drops_hop_by_hop_and_credentials() -> None:
    lines = _forward(
        [
            (b"host", b"h"),
            (b"connection", b"keep-alive, x-hop"),
            (b"x-hop", b"1"),
            (b"keep-alive", b"timeout=5"),
            (b"proxy-connection", b"keep-alive"),
            (b"te", b"trailers"),
            (b"trailer", b"x"),
            (b"upgrade", b"h2c"),
            (b"ketch-key", b"wk-1"),
            (b"x-ketch-client", b"6.6.6.6"),
            (b"forwarded", b"for=6.6.6.6"),
            (b"x-kept", b"yes"),
            (b"content-length", b"3"),
        ],
        remove=frozenset({b"ketch-key"}),
    )
    assert lines == [
        b"POST /p?q=1 HTTP/1.1",
        b"host: h",
        b"x-kept: yes",
        b"content-length: 3",
        b"x-ketch-client: 192.0.2.1",
        b"x-forwarded-for: 192.0.2.1",
        b"x-forwarded-proto: http",
        b"x-forwarded-host: h",
    ]


def test_forwarded_head_frames_chunked_and_keeps_websocket_upgrade() -> None:
    chunked = _forward([(b"host", b"h"), (b"transfer-encoding", b"chunked")])
    assert chunked.count(b"transfer-encoding: chunked") == 1
    ws = _forward(
        [
            (b"host", b"h"),
            (b"connection", b"Upgrade"),
            (b"upgrade", b"websocket"),
            (b"sec-websocket-key", b"k"),
        ],
        websocket=True,
    )
    assert b"connection: upgrade" in ws
    assert b"upgrade: websocket" in ws
    assert b"sec-websocket-key: k" in ws


def test_forwarded_head_keeps_forwarded_from_a_trusted_peer() -> None:
    lines = _forward([(b"forwarded", b"for=203.0.113.9")], trusted=True)
    assert b"forwarded: for=203.0.113.9" in lines
    assert b"x-forwarded-for: 192.0.2.1" in lines  # nothing came in: the peer alone


# -- rewrite_response_head --------------------------------------------------------------


RAW = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-type: text/plain\r\n\r\n"


def test_response_head_untouched_when_nothing_to_do() -> None:
    assert rewrite_response_head(RAW, close=False) is RAW


def test_response_head_drops_hop_by_hop_and_marks_close() -> None:
    raw = (
        b"HTTP/1.1 200 OK\r\nConnection: close, X-Private\r\nX-Private: 1\r\n"
        b"Keep-Alive: timeout=5\r\nContent-Length: 2\r\n\r\n"
    )
    assert _lines(rewrite_response_head(raw, close=False)) == [
        b"HTTP/1.1 200 OK",
        b"Content-Length: 2",
    ]
    assert _lines(rewrite_response_head(RAW, close=True))[-1] == b"connection: close"
    assert _lines(rewrite_response_head(RAW, close=False, keep_alive=True))[-1] == (
        b"connection: keep-alive"
    )


def test_response_head_dechunked_and_upgrade() -> None:
    chunked = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
    assert _lines(rewrite_response_head(chunked, close=True, dechunk=True)) == [
        b"HTTP/1.1 200 OK",
        b"connection: close",
    ]
    switching = (
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
        b"Connection: Upgrade\r\nSec-WebSocket-Accept: x\r\n\r\n"
    )
    assert rewrite_response_head(switching, close=False, upgrade=True) == switching


# -- platform_response ------------------------------------------------------------------


def test_platform_response_shape() -> None:
    data = platform_response(429, "rate limit exceeded", [("retry-after", "1")], close=False)
    head, _, body = data.partition(b"\r\n\r\n")
    assert body == b"ketch: rate limit exceeded\n"
    assert head.split(b"\r\n") == [
        b"HTTP/1.1 429 Too Many Requests",
        b"content-type: text/plain; charset=utf-8",
        b"content-length: 27",
        b"retry-after: 1",
    ]
    closing = platform_response(502, "x", close=True)
    assert b"\r\nconnection: close\r\n\r\n" in closing


def test_platform_response_refuses_header_injection() -> None:
    with pytest.raises(ValueError):
        platform_response(403, "no", [("x-a", "b\r\nset-cookie: evil")], close=False)


# -- request framing (RFC 9112 §6) --------------------------------------------------------


@pytest.mark.parametrize(
    ("codings", "status"),
    [
        ([b"chunked, chunked"], 400),
        ([b"chunked", b"chunked"], 400),
        ([b"chunked, gzip"], 400),
        ([b"gzip"], 400),
        ([b"gzip, chunked"], 501),
        ([b"gzip", b"chunked"], 501),
    ],
)
def test_transfer_codings_refused(codings: list[bytes], status: int) -> None:
    with pytest.raises(BadRequest) as info:
        analyse_head([(b"transfer-encoding", c) for c in codings])
    assert info.value.status == status


def test_chunked_alone_with_empty_list_elements_is_chunked() -> None:
    assert analyse_head([(b"transfer-encoding", b", Chunked ,")]).chunked


def test_forwarded_framing_is_the_gateways_own() -> None:
    lines = _forward([(b"host", b"h"), (b"content-length", b"0007 ")])
    assert [line for line in lines if line.lower().startswith(b"content-length")] == [
        b"content-length: 7"
    ]
    ws = _forward([(b"host", b"h"), (b"upgrade", b"WebSocket")], websocket=True)
    assert b"upgrade: websocket" in ws and b"upgrade: WebSocket" not in ws


def test_forwarding_fields_are_made_once() -> None:
    fwd = forwarding("192.0.2.1", analyse_head([(b"host", b"h")]), frozenset())
    first = fwd.fields()
    assert first == (
        b"x-ketch-client: 192.0.2.1\r\nx-forwarded-for: 192.0.2.1\r\n"
        b"x-forwarded-proto: http\r\nx-forwarded-host: h\r\n\r\n"
    )
    assert fwd.fields() is first


@pytest.mark.parametrize(
    ("value", "websocket"),
    [
        (b"websocket", True),
        (b"WebSocket", True),
        (b" websocket ", True),
        (b"websocket, h2c", False),
        (b"h2c", False),
        (b"xwebsocket", False),
        (None, False),
    ],
)
def test_is_websocket(value: bytes | None, websocket: bool) -> None:
    assert is_websocket(value) is websocket


# -- response framing -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "status", "bad"),
    [
        (b"HTTP/1.1 200 OK\r\n\r\n", 200, False),
        (b"HTTP/1.0 200 OK\r\n\r\n", 200, False),
        (b"HTTP/2.0 200 OK\r\n\r\n", 200, True),
        (b"RTSP/1.0 200 OK\r\n\r\n", 200, True),
        (b"HTTP/1.1 999 Odd\r\n\r\n", 999, True),
    ],
)
def test_response_problem(raw: bytes, status: int, bad: bool) -> None:
    assert (response_problem(raw, status) is not None) is bad


@pytest.mark.parametrize(
    ("head", "chunked"),
    [
        (b"HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, chunked\r\n\r\n", True),
        (b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked, gzip\r\n\r\n", False),
        (b"HTTP/1.1 200 OK\r\ntransfer-encoding: gzip\r\n\r\n", False),
        (b"HTTP/1.1 200 OK\r\ntransfer-encoding: gzip\r\ntransfer-encoding: chunked\r\n\r\n", True),
        (b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked, chunked\r\n\r\n", None),
    ],
)
def test_response_chunked(head: bytes, chunked: bool | None) -> None:
    assert response_chunked(head.lower()) is chunked


def test_switches_to_websocket() -> None:
    assert switches_to_websocket(b"http/1.1 101 x\r\nupgrade: websocket\r\n\r\n")
    assert not switches_to_websocket(b"http/1.1 101 x\r\nupgrade: h2c\r\n\r\n")
    assert not switches_to_websocket(b"http/1.1 101 x\r\n\r\n")


# -- what the parser refuses on its own ---------------------------------------------------
# The gateway leaves these to httptools (llhttp, strict by default) and answers 400 when it
# raises; were an upgrade to make it lenient, these would pass and the gateway would not know.

_H = b"POST / HTTP/1.1\r\nHost: a\r\n"


@pytest.mark.parametrize(
    "data",
    [
        _H + b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        _H + b"Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n",
        _H + b"Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
        _H + b"Content-Length: 5\r\nContent-Length: 5\r\n\r\nhello",
        _H + b"Content-Length: 5, 5\r\n\r\nhello",
        _H + b"Content-Length: +5\r\n\r\nhello",
        _H + b"Content-Length : 5\r\n\r\nhello",
        _H + b"Transfer-Encoding : chunked\r\n\r\n0\r\n\r\n",
        _H + b"Transfer-Encoding: xchunked\r\n\r\n0\r\n\r\n",
        _H + b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        _H + b"Transfer-Encoding:\x0bchunked\r\n\r\n0\r\n\r\n",
        _H + b"X-A: b\r\n c\r\n\r\n",
        b"GET / HTTP/1.1\nHost: a\n\n",
        _H + b"X: y\rz\r\n\r\n",
        _H + b"X: y\x00z\r\n\r\n",
        _H + b"X: y\x01z\r\n\r\n",
        _H + b"X Y: z\r\n\r\n",
        _H + b": z\r\n\r\n",
        b"GET / HTTP/1.1\r\n Host: a\r\n\r\n",
        _H + b"Transfer-Encoding: chunked\r\n\r\nfffffffffffffffffff\r\n",
        _H + b"Transfer-Encoding: chunked\r\n\r\n-1\r\nx\r\n",
        _H + b"Transfer-Encoding: chunked\r\n\r\n1\nx\r\n0\r\n\r\n",
        _H + b"Transfer-Encoding: chunked\r\n\r\n1\r\nxy0\r\n\r\n",
        _H + b"Transfer-Encoding: chunked\r\n\r\n1;a\nb\r\nx\r\n0\r\n\r\n",
        _H + b"Transfer-Encoding: chunked\r\n\r\n0\r\nContent-Length: 5\r\n\r\n",
        b"GET /a\x01b HTTP/1.1\r\nHost: a\r\n\r\n",
        b"GET / HTTP/1.2\r\nHost: a\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\nGET / HTTP/1.1\r\n\r\n",
    ],
    ids=lambda data: repr(data[-40:]),
)
def test_the_request_parser_refuses(data: bytes) -> None:
    class Sink:
        pass

    with pytest.raises(httptools.HttpParserError):
        httptools.HttpRequestParser(Sink()).feed_data(data)
