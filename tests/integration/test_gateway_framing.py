"""Message framing at both edges of the gateway (W17), against scripted upstreams that show
exactly which bytes the gateway sent them and answer with exactly the bytes given.

The request side: what follows an upgrade head waits for the container's 101; framing
fields sent upstream are the gateway's own; trailers never join the head. The response
side: a response the gateway cannot frame exactly, or bytes past its end, never reach the
client, whose connection then ends.
"""

from __future__ import annotations

import contextlib
import select
import socket
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from ketch._gateway.proxy import Limits
from supports.gateway_harness import FakeResolver, GatewayThread, RawUpstream, read_head
from supports.raw_http import Reply, exchange, request, websocket_upgrade

HANDSHAKE = websocket_upgrade("/ws", "a")
SWITCH = (
    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n"
)
OK = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"


class Seen:
    """What scripted connections received, by connection number."""

    def __init__(self) -> None:
        self.heads: dict[int, bytes] = {}
        self.after: dict[int, bytes] = {}  # bytes that came after the head, until EOF
        self.done = threading.Event()


def read_all(conn: socket.socket, timeout: float = 10.0) -> bytes:
    conn.settimeout(timeout)
    data = b""
    with contextlib.suppress(OSError):
        while chunk := conn.recv(65536):
            data += chunk
    return data


def serve(
    tmp_path: Path, script: Callable[[socket.socket, int], None]
) -> tuple[RawUpstream, GatewayThread]:
    raw = RawUpstream(tmp_path / "raw.sock", script)
    return raw, GatewayThread(FakeResolver(raw.address))


def _split(data: bytes) -> tuple[bytes, bytes]:
    head, sep, rest = data.partition(b"\r\n\r\n")
    return head + sep, rest


# -- the request side ---------------------------------------------------------------------


@pytest.mark.spec("W15", "W17")
def test_bytes_after_a_handshake_wait_for_the_101(tmp_path: Path) -> None:
    seen = Seen()

    def script(conn: socket.socket, n: int) -> None:
        seen.heads[n], seen.after[n] = _split(read_head(conn))
        if seen.after[n]:
            return  # bytes came before any answer: the test fails on what it saw
        conn.sendall(SWITCH)
        got = b""
        while len(got) < len(b"early, then more"):
            got += conn.recv(1024)
        seen.after[n] = got
        conn.sendall(b"pong")

    raw, gw = serve(tmp_path, script)
    with raw, gw, gw.raw() as sock:
        sock.sendall(HANDSHAKE + b"early, ")
        reply = b""
        while b"\r\n\r\n" not in reply:
            reply += sock.recv(4096)
        assert reply.startswith(b"HTTP/1.1 101 ")
        sock.sendall(b"then more")
        tail = reply.partition(b"\r\n\r\n")[2]
        while len(tail) < 4:
            tail += sock.recv(4096)
    assert seen.after[0] == b"early, then more"  # only once the 101 had been sent
    assert tail == b"pong"
    assert gw.stats["websockets"] == 1


@pytest.mark.spec("W15", "W17")
@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 403 Forbidden\r\ncontent-length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nno",
        b"HTTP/1.1 400 Bad Request\r\ntransfer-encoding: chunked\r\n\r\n2\r\nno\r\n0\r\n\r\n",
    ],
)
def test_a_handshake_without_a_101_forwards_nothing_more_and_is_not_reused(
    tmp_path: Path, answer: bytes
) -> None:
    seen = Seen()

    def script(conn: socket.socket, n: int) -> None:
        seen.heads[n], early = _split(read_head(conn))
        if n == 0:
            conn.sendall(answer)
            seen.after[n] = early + read_all(conn)  # until the gateway closes it
            seen.done.set()
        else:
            conn.sendall(OK)

    raw, gw = serve(tmp_path, script)
    hidden = request("GET", "/hidden", "a")
    with raw, gw:
        reply = exchange(gw.port, HANDSHAKE + hidden)
        assert reply.closed and len(reply.responses) == 1, reply
        assert reply.responses[0].status == int(answer[9:12])
        assert seen.done.wait(10), "the gateway kept the connection that did not switch"
        assert seen.after[0] == b"", "bytes after the handshake reached the container"
        other = exchange(gw.port, request("GET", "/next", "a", headers={"Connection": "close"}))
        assert other.statuses == [200] and other.responses[0].body == b"ok"
        assert gw.stats["upstream_connects"] == 2
    assert b"/hidden" not in b"".join(seen.heads.values())


@pytest.mark.spec("W17")
@pytest.mark.parametrize(
    ("data", "why"),
    [
        (
            request(
                "GET",
                "/ws",
                "a",
                body=b"GET /x HTTP/1.1\r\n\r\n",
                headers={"Upgrade": "websocket", "Connection": "Upgrade"},
            ),
            "cannot have a body",
        ),
        (
            request(
                "POST", "/", "a", body=b"abc", headers={"Upgrade": "h2c", "Connection": "Upgrade"}
            ),
            "cannot have a body",
        ),
        (b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", "HTTP/1.0"),
        (b"GET / HTTP/2.0\r\nHost: a\r\n\r\n", "HTTP/2.0 is not supported"),
        (b"GET /\r\n\r\n", "is not supported"),
        (
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked, chunked\r\n\r\n",
            "Transfer-Encoding",
        ),
    ],
)
def test_requests_refused_before_any_upstream(tmp_path: Path, data: bytes, why: str) -> None:
    seen = Seen()

    def script(conn: socket.socket, n: int) -> None:
        seen.heads[n] = read_head(conn)
        conn.sendall(OK)

    raw, gw = serve(tmp_path, script)
    with raw, gw:
        reply = exchange(gw.port, data)
        assert reply.closed and len(reply.responses) == 1, reply
        answer = reply.responses[0]
        assert answer.status in (400, 505), answer
        assert answer.text.startswith("ketch: ") and why in answer.text, answer
        assert gw.resolver.heads == []
    assert seen.heads == {}


@pytest.mark.spec("W17")
def test_framing_fields_sent_upstream_are_the_gateways_own(tmp_path: Path) -> None:
    seen = Seen()

    def script(conn: socket.socket, n: int) -> None:
        data = read_head(conn)
        while not (data.endswith(b"0\r\n\r\n") or data.endswith(b"hello")):
            data += conn.recv(4096)
        seen.heads[n], seen.after[n] = _split(data)
        conn.sendall(OK)

    raw, gw = serve(tmp_path, script)
    with raw, gw:
        padded = (
            b"POST /cl HTTP/1.1\r\nHost: a\r\nContent-Length: 0005 \r\n"
            b"Connection: close\r\n\r\nhello"
        )
        assert exchange(gw.port, padded).statuses == [200]
        chunked = (
            b"POST /te HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:\tChunked\r\n"
            b"Connection: close\r\n\r\n"
            b'3;name="value"\r\nabc\r\n002\r\nde\r\n0\r\nX-Trailer: t\r\n'
            b"Host: elsewhere\r\n\r\n"
        )
        assert exchange(gw.port, chunked).statuses == [200]
    cl_head = seen.heads[0].lower()
    assert b"\r\ncontent-length: 5\r\n" in cl_head and cl_head.count(b"content-length") == 1
    assert seen.after[0] == b"hello"
    te_head = seen.heads[1].lower()
    assert b"\r\ntransfer-encoding: chunked\r\n" in te_head
    assert te_head.count(b"transfer-encoding") == 1 and b"x-trailer" not in te_head
    assert b"elsewhere" not in te_head
    assert seen.after[1] == b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"  # no extension, no trailer
    assert [h.headers for h in gw.resolver.heads][1] == [
        (b"host", b"a"),
        (b"transfer-encoding", b"Chunked"),
        (b"connection", b"close"),
    ]


@pytest.mark.spec("W17")
def test_oversized_trailers_get_431(tmp_path: Path) -> None:
    def script(conn: socket.socket, n: int) -> None:
        read_all(conn)  # never answers: the gateway must

    raw, gw = serve(tmp_path, script)
    with raw, gw:
        head = b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nx\r\n0\r\n"
        many = b"".join(b"X-Pad-%d: %b\r\n" % (i, b"p" * 1000) for i in range(80))
        reply = exchange(gw.port, head + many + b"\r\n")
        assert reply.closed and reply.statuses == [431], reply

        # One field that never ends: refused once reads that hold nothing but it pass the
        # limit, so the parser never holds more than that and one read.
        with gw.raw() as sock:
            sock.sendall(head + b"X-Pad: ")
            sent = 0
            with contextlib.suppress(OSError):
                while sent < 4 << 20 and not select.select([sock], [], [], 0)[0]:
                    sock.sendall(b"p" * 8192)
                    sent += 8192
            got = read_all(sock)
        assert got.startswith(b"HTTP/1.1 431 "), got[:200]
        assert sent < 4 << 20


@pytest.mark.spec("W17")
def test_an_absurd_chunk_size_is_held_to_the_body_limit(tmp_path: Path) -> None:
    def script(conn: socket.socket, n: int) -> None:
        read_all(conn)

    raw = RawUpstream(tmp_path / "raw.sock", script)
    with raw, GatewayThread(FakeResolver(raw.address), Limits(max_body_bytes=4096)) as gw:
        head = b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
        reply = exchange(gw.port, [head + b"ffffffffffffffff\r\n", b"x" * 8192])
    assert reply.closed and reply.statuses == [413], reply


# -- the response side --------------------------------------------------------------------


def _answering(tmp_path: Path, first: bytes) -> tuple[RawUpstream, GatewayThread]:
    """Connection 0 answers its first request with `first`; later ones with OK."""

    def script(conn: socket.socket, n: int) -> None:
        read_head(conn)
        conn.sendall(first if n == 0 else OK)
        if n == 0:
            read_all(conn)
        else:
            while read_head(conn):
                conn.sendall(OK)

    return serve(tmp_path, script)


def _after(gw: GatewayThread) -> Reply:
    """A request on a connection of its own once the bad answer is over."""
    return exchange(gw.port, request("GET", "/after", "a", headers={"Connection": "close"}))


@pytest.mark.spec("W17")
@pytest.mark.parametrize(
    "second",
    [
        b"HTTP/1.1 200 OK\r\ncontent-length: 7\r\n\r\nsmuggle",
        b"HTTP/1.1 200 OK\r\ncontent-le",  # the start of a head
        b"garbage",
    ],
)
@pytest.mark.parametrize(
    "first",
    [
        OK,
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
        b"HTTP/1.1 204 No Content\r\n\r\n",
    ],
)
def test_bytes_past_a_responses_end_never_reach_the_client(
    tmp_path: Path, first: bytes, second: bytes
) -> None:
    raw, gw = _answering(tmp_path, first + second)
    with raw, gw:
        pipelined = request("GET", "/1", "a") + request("GET", "/2", "a")
        with gw.raw() as sock:
            sock.sendall(pipelined)
            got = b""
            sock.settimeout(10)
            with contextlib.suppress(OSError):
                while chunk := sock.recv(65536):
                    got += chunk
        assert got.startswith(b"HTTP/1.1 502 "), got
        assert got.count(b"HTTP/1.1") == 1, got  # then closed: /2 is not answered
        assert b"smuggle" not in got and b"garbage" not in got
        assert _after(gw).statuses == [200]


@pytest.mark.spec("W17")
@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-length: 3\r\n\r\nabc",
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked, chunked\r\n\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\ncontent-length: 2\n\nok",
        b"HTTP/1.1 200 OK\r\nx-a: a\rb\r\ncontent-length: 2\r\n\r\nok",
        b"HTTP/1.1 200 OK\r\nx-a: a\x00b\r\ncontent-length: 2\r\n\r\nok",
        b"HTTP/1.1 200 OK\r\nx-a: a\r\n folded\r\ncontent-length: 2\r\n\r\nok",
        b"HTTP/1.1 200 OK\r\ntransfer-encoding : chunked\r\n\r\n0\r\n\r\n",
        b"HTTP/2.0 200 OK\r\ncontent-length: 2\r\n\r\nok",
        b"HTTP/1.1 999 Odd\r\ncontent-length: 2\r\n\r\nok",
        b"HTTP/1.1 101 Switching Protocols\r\n\r\n",  # to a request that asked for no switch
    ],
)
def test_malformed_responses_get_502(tmp_path: Path, answer: bytes) -> None:
    raw, gw = _answering(tmp_path, answer)
    with raw, gw:
        reply = exchange(gw.port, request("GET", "/", "a"))
        assert reply.statuses == [502] and reply.closed, reply
        assert reply.responses[0].text.startswith("ketch: the app")
        assert _after(gw).statuses == [200]


@pytest.mark.spec("W17")
@pytest.mark.parametrize(
    "switch",
    [
        b"HTTP/1.1 101 Switching Protocols\r\n\r\n",
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\r\n",
    ],
)
def test_a_101_to_anything_but_websocket_gets_502(tmp_path: Path, switch: bytes) -> None:
    raw, gw = _answering(tmp_path, switch)
    with raw, gw:
        reply = exchange(gw.port, HANDSHAKE + b"held")
        assert reply.statuses == [502] and not reply.upgraded, reply
        assert gw.stats["websockets"] == 0


@pytest.mark.spec("W17")
def test_a_coding_other_than_chunked_last_runs_to_the_close(tmp_path: Path) -> None:
    def script(conn: socket.socket, n: int) -> None:
        read_head(conn)
        conn.sendall(b"HTTP/1.1 200 OK\r\ntransfer-encoding: gzip\r\n\r\nzipped bytes")

    raw, gw = serve(tmp_path, script)
    with raw, gw:
        reply = exchange(gw.port, request("GET", "/", "a"))
    assert reply.closed and reply.statuses == [200], reply
    assert reply.responses[0].body == b"zipped bytes"
    assert reply.responses[0].header(b"connection") == b"close"
