"""The gateway's pure HTTP pieces: head analysis, forwarding rules, head rewriting, answers."""

from __future__ import annotations

import pytest

from ketch._gateway.http import (
    BadRequest,
    analyse_head,
    forward_request_head,
    forwarding,
    parse_host,
    platform_response,
    rewrite_response_head,
)


def _lines(head: bytes) -> list[bytes]:
    assert head.endswith(b"\r\n\r\n")
    return head[:-4].split(b"\r\n")


# -- parse_host -------------------------------------------------------------------------


@pytest.mark.parametrize(("value", "host"), [
    (b"Example.COM", "example.com"),
    (b"app--hello.localhost:8000", "app--hello.localhost"),
    (b"127.0.0.1:80", "127.0.0.1"),
    (b"[::1]:8000", "[::1]"),
    (b" spaced.example ", "spaced.example"),
])
def test_parse_host(value: bytes, host: str) -> None:
    assert parse_host(value) == host


@pytest.mark.parametrize("value", [b"a b", b"host:port", b"[::1", b"x/y", b"a:1:2"])
def test_parse_host_refuses_garbage(value: bytes) -> None:
    with pytest.raises(BadRequest) as info:
        parse_host(value)
    assert info.value.status == 400


# -- analyse_head -----------------------------------------------------------------------


def test_analyse_head_gathers_facts() -> None:
    facts = analyse_head([
        (b"host", b"a.example"), (b"content-length", b"12"),
        (b"connection", b"keep-alive, X-Drop"), (b"connection", b"other"),
        (b"x-forwarded-for", b"1.1.1.1"), (b"x-forwarded-for", b"2.2.2.2"),
        (b"upgrade", b"websocket"),
    ])
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
    facts = analyse_head([(b"host", b"h:1"), (b"x-forwarded-for", b"6.6.6.6"),
                          (b"x-forwarded-proto", b"https")])
    fwd = forwarding("10.0.0.5", facts, frozenset({"10.0.0.1"}))
    assert (fwd.client, fwd.forwarded_for, fwd.proto, fwd.host) == (
        "10.0.0.5", "10.0.0.5", b"http", b"h:1")


def test_trusted_peer_appends_and_names_the_nearest_untrusted_hop() -> None:
    trusted = frozenset({"10.0.0.1", "10.0.0.2"})
    facts = analyse_head([(b"x-forwarded-for", b"6.6.6.6, 203.0.113.9"),
                          (b"x-forwarded-for", b"10.0.0.2"), (b"x-forwarded-proto", b"https"),
                          (b"x-forwarded-host", b"public.example")])
    fwd = forwarding("10.0.0.1", facts, trusted)
    assert fwd.forwarded_for == "6.6.6.6, 203.0.113.9, 10.0.0.2, 10.0.0.1"
    assert fwd.client == "203.0.113.9"  # 6.6.6.6 could have been written by anyone
    assert fwd.proto == b"https"
    assert fwd.host == b"public.example"


def test_trusted_peer_without_forwarded_for_is_the_client() -> None:
    fwd = forwarding("10.0.0.1", analyse_head([]), frozenset({"10.0.0.1"}))
    assert (fwd.client, fwd.forwarded_for) == ("10.0.0.1", "10.0.0.1")


# -- forward_request_head ---------------------------------------------------------------


def _forward(headers: list[tuple[bytes, bytes]], *, remove: frozenset[bytes] = frozenset(),
             websocket: bool = False, trusted: bool = False) -> list[bytes]:
    facts = analyse_head(headers)
    fwd = forwarding("192.0.2.1", facts, frozenset({"192.0.2.1"}) if trusted else frozenset())
    return _lines(forward_request_head(b"POST", b"/p?q=1", headers, facts, fwd,
                                       remove=remove, trusted_peer=trusted, websocket=websocket))


def test_forwarded_head_drops_hop_by_hop_and_credentials() -> None:
    lines = _forward([
        (b"host", b"h"), (b"connection", b"keep-alive, x-hop"), (b"x-hop", b"1"),
        (b"keep-alive", b"timeout=5"), (b"proxy-connection", b"keep-alive"), (b"te", b"trailers"),
        (b"trailer", b"x"), (b"upgrade", b"h2c"), (b"ketch-key", b"wk-1"),
        (b"x-ketch-client", b"6.6.6.6"), (b"forwarded", b"for=6.6.6.6"), (b"x-kept", b"yes"),
        (b"content-length", b"3"),
    ], remove=frozenset({b"ketch-key"}))
    assert lines == [
        b"POST /p?q=1 HTTP/1.1", b"host: h", b"x-kept: yes", b"content-length: 3",
        b"x-ketch-client: 192.0.2.1", b"x-forwarded-for: 192.0.2.1",
        b"x-forwarded-proto: http", b"x-forwarded-host: h",
    ]


def test_forwarded_head_frames_chunked_and_keeps_websocket_upgrade() -> None:
    chunked = _forward([(b"host", b"h"), (b"transfer-encoding", b"chunked")])
    assert chunked.count(b"transfer-encoding: chunked") == 1
    ws = _forward([(b"host", b"h"), (b"connection", b"Upgrade"), (b"upgrade", b"websocket"),
                   (b"sec-websocket-key", b"k")], websocket=True)
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
    raw = (b"HTTP/1.1 200 OK\r\nConnection: close, X-Private\r\nX-Private: 1\r\n"
           b"Keep-Alive: timeout=5\r\nContent-Length: 2\r\n\r\n")
    assert _lines(rewrite_response_head(raw, close=False)) == [
        b"HTTP/1.1 200 OK", b"Content-Length: 2"]
    assert _lines(rewrite_response_head(RAW, close=True))[-1] == b"connection: close"
    assert _lines(rewrite_response_head(RAW, close=False, keep_alive=True))[-1] == (
        b"connection: keep-alive")


def test_response_head_dechunked_and_upgrade() -> None:
    chunked = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
    assert _lines(rewrite_response_head(chunked, close=True, dechunk=True)) == [
        b"HTTP/1.1 200 OK", b"connection: close"]
    switching = (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                 b"Connection: Upgrade\r\nSec-WebSocket-Accept: x\r\n\r\n")
    assert rewrite_response_head(switching, close=False, upgrade=True) == switching


# -- platform_response ------------------------------------------------------------------


def test_platform_response_shape() -> None:
    data = platform_response(429, "rate limit exceeded", [("retry-after", "1")], close=False)
    head, _, body = data.partition(b"\r\n\r\n")
    assert body == b"ketch: rate limit exceeded\n"
    assert head.split(b"\r\n") == [
        b"HTTP/1.1 429 Too Many Requests", b"content-type: text/plain; charset=utf-8",
        b"content-length: 27", b"retry-after: 1",
    ]
    closing = platform_response(502, "x", close=True)
    assert b"\r\nconnection: close\r\n\r\n" in closing


def test_platform_response_refuses_header_injection() -> None:
    with pytest.raises(ValueError):
        platform_response(403, "no", [("x-a", "b\r\nset-cookie: evil")], close=False)
