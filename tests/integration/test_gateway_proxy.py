"""The gateway's proxy against real servers: uvicorn apps on unix sockets behind a fake
resolver, driven by real clients (httpx, websockets, raw sockets for what clients won't send)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import http.client
import itertools
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect
from websockets.exceptions import ConnectionClosedError
from websockets.sync.client import connect as ws_connect

from ketch._gateway.proxy import Limits
from supports.gateway_harness import (
    WS_MAX,
    FakeResolver,
    GatewayThread,
    RawUpstream,
    UvicornThread,
    read_head,
)

# -- the upstream app ---------------------------------------------------------------------


class AppEvents:
    """What the app saw, for tests to assert on from the test thread."""

    stream_stopped = threading.Event()


async def echo(request: Request) -> JSONResponse:
    return JSONResponse(
        {
            "method": request.method,
            "path": request.url.path,
            "query": request.url.query,
            "headers": [[k, v] for k, v in request.headers.items()],
        }
    )


async def json_body(request: Request) -> JSONResponse:
    return JSONResponse({"got": await request.json()})


async def upload(request: Request) -> JSONResponse:
    digest = hashlib.sha256()
    size = 0
    async for chunk in request.stream():
        digest.update(chunk)
        size += len(chunk)
    return JSONResponse({"size": size, "sha256": digest.hexdigest()})


async def sse(request: Request) -> StreamingResponse:
    async def events() -> Any:
        for i in range(5):
            yield f"data: {i}\n\n"
            await asyncio.sleep(0.2)

    return StreamingResponse(events(), media_type="text/event-stream")


async def forever(request: Request) -> StreamingResponse:
    async def chunks() -> Any:
        try:
            while True:
                yield b"tick\n"
                await asyncio.sleep(0.05)
        finally:
            # Reached only when the server stops the generator: the client went away.
            AppEvents.stream_stopped.set()

    return StreamingResponse(chunks(), media_type="text/plain")


async def download(request: Request) -> StreamingResponse:
    size = int(request.query_params["size"])
    block = b"d" * 65536

    async def blocks() -> Any:
        for _ in range(size // len(block)):
            yield block

    return StreamingResponse(blocks(), media_type="application/octet-stream")


async def refuse_early(request: Request) -> PlainTextResponse:
    return PlainTextResponse("too big for this app", status_code=413)  # body left unread


async def status(request: Request) -> Response:
    return Response(status_code=int(request.path_params["code"]))


async def ws_echo(websocket: WebSocket) -> None:
    await websocket.accept()
    with contextlib.suppress(WebSocketDisconnect):
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
            if message.get("text") is not None:
                await websocket.send_text(message["text"])
            else:
                await websocket.send_bytes(message["bytes"])


APP = Starlette(
    routes=[
        Route("/echo", echo),
        Route("/json", json_body, methods=["POST"]),
        Route("/upload", upload, methods=["POST"]),
        Route("/sse", sse),
        Route("/forever", forever),
        Route("/download", download),
        Route("/refuse-early", refuse_early, methods=["POST"]),
        Route("/status/{code}", status),
        WebSocketRoute("/ws", ws_echo),
    ]
)


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UvicornThread]:
    with UvicornThread(APP, tmp_path_factory.mktemp("upstream") / "app.sock") as server:
        yield server


@pytest.fixture
def resolver(upstream: UvicornThread) -> FakeResolver:
    return FakeResolver(upstream.address)


@pytest.fixture
def gateway(resolver: FakeResolver) -> Iterator[GatewayThread]:
    with GatewayThread(resolver) as gw:
        yield gw


# -- helpers ------------------------------------------------------------------------------


class _Reader:
    """Lets http.client parse several responses from one socket, in order: every response
    reads from the same buffered file, which none of them may close."""

    def __init__(self, sock: socket.socket) -> None:
        self._file = sock.makefile("rb")

    def makefile(self, *args: object, **kwargs: object) -> Any:
        return self

    def __getattr__(self, name: str) -> Any:
        return getattr(self._file, name)

    def close(self) -> None:
        pass


def read_response(reader: _Reader, method: str = "GET") -> tuple[int, dict[str, str], bytes]:
    response = http.client.HTTPResponse(reader, method=method)  # type: ignore[arg-type]
    response.begin()
    body = response.read()
    return response.status, {k.lower(): v for k, v in response.getheaders()}, body


def read_until_closed(sock: socket.socket, timeout: float = 10) -> bytes:
    sock.settimeout(timeout)
    data = b""
    with contextlib.suppress(ConnectionResetError):
        while chunk := sock.recv(65536):
            data += chunk
    return data


def wait_for(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


# -- plain requests -----------------------------------------------------------------------


@pytest.mark.spec("W17")
def test_get_with_query_and_post_json(gateway: GatewayThread) -> None:
    with httpx.Client(base_url=gateway.url) as client:
        got = client.get("/echo", params={"a": "1", "b": "two words"})
        assert got.status_code == 200
        assert got.json()["query"] == "a=1&b=two+words"
        posted = client.post("/json", json={"x": [1, 2, 3]})
        assert posted.status_code == 200
        assert posted.json() == {"got": {"x": [1, 2, 3]}}
    wait_for(lambda: gateway.resolver.releases == ["ok", "ok"])


def test_app_errors_pass_through(gateway: GatewayThread) -> None:
    with httpx.Client(base_url=gateway.url) as client:
        missing = client.get("/missing")
        assert missing.status_code == 404
        assert missing.text == "Not Found"  # the app's own body, not a ketch one
        wrong = client.post("/echo")
        assert wrong.status_code == 405
        assert client.get("/status/500").status_code == 500
    assert gateway.stats["responses_4xx"] == 2
    assert gateway.stats["responses_5xx"] == 1


def test_keepalive_reuses_one_upstream_connection(gateway: GatewayThread) -> None:
    with httpx.Client(base_url=gateway.url) as client:
        for i in range(20):
            assert client.get("/echo", params={"i": i}).status_code == 200
    stats = gateway.stats
    assert stats["connections"] == 1  # the client's connection was kept too
    assert stats["upstream_connects"] == 1
    assert stats["upstream_reused"] == 19


def test_head_and_no_content_responses_keep_the_connection(gateway: GatewayThread) -> None:
    with httpx.Client(base_url=gateway.url) as client:
        head = client.head("/echo")
        assert head.status_code == 200
        assert head.content == b""
        assert int(head.headers["content-length"]) > 0
        assert client.get("/status/204").status_code == 204
        assert client.get("/status/304").status_code == 304
        assert client.get("/echo").json()["method"] == "GET"
    assert gateway.stats["connections"] == 1
    assert gateway.stats["upstream_connects"] == 1


def test_pipelined_requests_answered_in_order(gateway: GatewayThread) -> None:
    with gateway.raw() as sock:
        sock.sendall(
            b"".join(b"GET /echo?n=%d HTTP/1.1\r\nHost: a\r\n\r\n" % i for i in range(3))
            + b"GET /denied HTTP/1.1\r\nHost: a\r\n\r\n"
            + b"POST /json HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\n{}"
        )
        reader = _Reader(sock)
        for i in range(3):
            status, _, body = read_response(reader)
            assert status == 200
            assert json.loads(body)["query"] == f"n={i}"
        assert read_response(reader)[0] == 403
        assert read_response(reader)[2] == b'{"got":{}}'
    assert gateway.stats["connections"] == 1


# -- request bodies -----------------------------------------------------------------------


def test_chunked_request_body_streams_through(gateway: GatewayThread) -> None:
    pieces = [os.urandom(n) for n in (1, 1000, 70_000, 5)]

    def body() -> Iterator[bytes]:
        yield from pieces

    with httpx.Client(base_url=gateway.url) as client:
        got = client.post("/upload", content=body())  # a generator: sent chunked
    assert got.status_code == 200
    whole = b"".join(pieces)
    assert got.json() == {"size": len(whole), "sha256": hashlib.sha256(whole).hexdigest()}


def test_body_waits_while_the_resolver_does(gateway: GatewayThread) -> None:
    gateway.resolver.delay = 0.3  # as if a container were starting
    data = os.urandom(3 * 1024 * 1024)
    with httpx.Client(base_url=gateway.url) as client:
        got = client.post("/upload", content=data)
    assert got.json() == {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def test_expect_100_continue_is_forwarded(gateway: GatewayThread) -> None:
    with gateway.raw() as sock:
        sock.sendall(
            b"POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n"
        )
        interim = sock.recv(1024)
        assert interim.startswith(b"HTTP/1.1 100 Continue\r\n")  # from uvicorn, via the gateway
        sock.sendall(b"hello")
        status, _, body = read_response(_Reader(sock))
    assert status == 200
    assert json.loads(body)["size"] == 5


def test_app_answering_before_the_body_ends_reaches_the_client(gateway: GatewayThread) -> None:
    block = b"u" * 65536
    with gateway.raw() as sock:
        sock.sendall(
            b"POST /refuse-early HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n"
            % (64 * 1024 * 1024)
        )
        sock.settimeout(0.05)
        received = b""
        for _ in range(1024):  # send until the answer shows up (or the gateway stops reading)
            try:
                received = sock.recv(65536)
                break
            except TimeoutError:
                pass
            try:
                sock.sendall(block)
            except TimeoutError:
                continue
            except OSError:
                break
        data = received + read_until_closed(sock)
    assert data.startswith(b"HTTP/1.1 413 ")
    assert data.endswith(b"too big for this app")
    assert b"connection: close" in data.lower()  # the rest of the body is not read
    wait_for(lambda: gateway.resolver.releases == ["ok"])


@pytest.mark.spec("W12")
def test_declared_body_over_the_limit_gets_413_unread(gateway: GatewayThread) -> None:
    with gateway.raw() as sock:
        started = time.monotonic()
        sock.sendall(
            b"POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n" % (5 * 1024**3)
        )
        data = read_until_closed(sock)
    assert time.monotonic() - started < 2
    assert data.startswith(b"HTTP/1.1 413 ")
    assert data.endswith(b"\r\n\r\nketch: request body over the limit of 4294967296 bytes\n")
    assert gateway.resolver.heads == []  # refused before anyone was asked


# -- the ketch answers and limits ---------------------------------------------------------


@pytest.mark.spec("W17")
def test_denied_answers_with_the_ketch_body(gateway: GatewayThread) -> None:
    with httpx.Client(base_url=gateway.url) as client:
        denied = client.get("/denied")
        assert denied.status_code == 403
        assert denied.text == "ketch: not for you\n"
        assert denied.headers["content-type"] == "text/plain; charset=utf-8"
        assert denied.headers["x-ketch-reason"] == "test"
        assert client.get("/echo").status_code == 200  # the connection stays usable
    assert gateway.stats["connections"] == 1
    assert gateway.stats["denied"] == 1


def test_resolver_failure_gets_500(gateway: GatewayThread) -> None:
    with httpx.Client(base_url=gateway.url) as client:
        got = client.get("/broken-resolver")
    assert got.status_code == 500
    assert got.text == "ketch: internal error while routing the request\n"


def test_client_leaving_while_resolving_cancels_the_resolver(gateway: GatewayThread) -> None:
    with gateway.raw() as sock:
        sock.sendall(b"GET /cold HTTP/1.1\r\nHost: a\r\n\r\n")
        wait_for(lambda: len(gateway.resolver.heads) == 1)
    assert gateway.resolver.cancelled.wait(5)
    assert gateway.resolver.releases == []  # no target was handed out


def test_unreachable_container_gets_502(gateway: GatewayThread) -> None:
    with httpx.Client(base_url=gateway.url) as client:
        got = client.get("/dead")
    assert got.status_code == 502
    assert got.text.startswith("ketch: cannot connect to the app")
    wait_for(lambda: gateway.resolver.releases == ["upstream_error"])


@pytest.mark.spec("W17")
def test_oversized_head_gets_431(gateway: GatewayThread) -> None:
    with gateway.raw() as sock:
        sock.sendall(b"GET /echo HTTP/1.1\r\nHost: a\r\nX-Big: " + b"a" * 70_000 + b"\r\n\r\n")
        data = read_until_closed(sock)
    assert data.startswith(b"HTTP/1.1 431 ")
    assert b"ketch: request head too large\n" in data


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GARBAGE\r\n\r\n",
        b"GET /echo HTTP/1.1\r\nHost: a\r\nNo colon here\r\n\r\n",
        b"GET /echo HTTP/9.9\r\nHost: a\r\n\r\n",
        b"GET /echo HTTP/1.1\r\n\r\n",  # HTTP/1.1 without Host
    ],
)
def test_malformed_request_gets_400(gateway: GatewayThread, request_bytes: bytes) -> None:
    with gateway.raw() as sock:
        sock.sendall(request_bytes)
        data = read_until_closed(sock)
    assert data.startswith(b"HTTP/1.1 400 ")
    assert b"\r\n\r\nketch: " in data


@pytest.mark.spec("W17")
def test_slow_client_gets_408_while_others_proceed(resolver: FakeResolver) -> None:
    with GatewayThread(resolver, Limits(head_timeout=1.0)) as gateway:
        answer: list[bytes] = []

        def slow_loris() -> None:
            with gateway.raw() as sock:
                sock.sendall(b"GET /echo HTTP/1.1\r\nHost: a\r\nX-Slow: ")
                sock.settimeout(0.2)
                received = b""
                for _ in range(25):  # one byte every 0.2 s, for up to 5 s
                    try:
                        sock.sendall(b"a")
                        received += sock.recv(4096)
                        if received:
                            break
                    except TimeoutError:
                        continue
                    except OSError:
                        break
                answer.append(received + read_until_closed(sock, 2))

        started = time.monotonic()
        thread = threading.Thread(target=slow_loris)
        thread.start()
        time.sleep(0.3)
        with httpx.Client(base_url=gateway.url) as client:
            t0 = time.monotonic()
            assert client.get("/echo").status_code == 200
            assert time.monotonic() - t0 < 0.5
        thread.join(10)
        elapsed = time.monotonic() - started
    assert answer[0].startswith(b"HTTP/1.1 408 ")
    assert answer[0].endswith(b"ketch: timed out waiting for the request head\n")
    assert 0.9 < elapsed < 3


# -- forwarding headers -------------------------------------------------------------------


@pytest.mark.spec("W16")
@pytest.mark.spec("W17")
def test_hop_by_hop_removed_and_forwarding_set(gateway: GatewayThread) -> None:
    with gateway.raw() as sock:
        sock.sendall(
            b"GET /echo?x=1 HTTP/1.1\r\nHost: App.Example:8000\r\n"
            b"Connection: keep-alive, X-Hop\r\nX-Hop: secret\r\nKeep-Alive: timeout=5\r\n"
            b"TE: trailers\r\nTrailer: x-t\r\nUpgrade: h2c\r\nProxy-Connection: keep-alive\r\n"
            b"X-Forwarded-For: 6.6.6.6\r\nX-Ketch-Client: 6.6.6.6\r\nX-Forwarded-Proto: https\r\n"
            b"Ketch-Key: wk-1\r\nKetch-Secret: ws-1\r\nX-End: kept\r\n\r\n"
        )
        client_port = sock.getsockname()[1]
        status, _, body = read_response(_Reader(sock))
    assert status == 200
    headers = dict(json.loads(body)["headers"])
    for gone in (
        "connection",
        "x-hop",
        "keep-alive",
        "te",
        "trailer",
        "upgrade",
        "proxy-connection",
        "ketch-key",
        "ketch-secret",
    ):
        assert gone not in headers
    assert headers["x-forwarded-for"] == "127.0.0.1"  # replaced: the peer is not trusted
    assert headers["x-ketch-client"] == "127.0.0.1"
    assert headers["x-forwarded-proto"] == "http"
    assert headers["x-forwarded-host"] == "App.Example:8000"
    assert headers["host"] == "App.Example:8000"
    assert headers["x-end"] == "kept"
    (head,) = gateway.resolver.heads
    assert head.host == "app.example"
    assert head.local_port == gateway.port
    assert head.client == ("127.0.0.1", client_port)
    assert head.target == "/echo?x=1"
    assert (b"ketch-key", b"wk-1") in head.headers  # the resolver sees the credentials


@pytest.mark.spec("W16")
def test_trusted_proxy_forwarded_for_is_appended(resolver: FakeResolver) -> None:
    with GatewayThread(resolver, trusted=frozenset({"127.0.0.1"})) as gateway:
        with httpx.Client(base_url=gateway.url) as client:
            got = client.get(
                "/echo", headers={"x-forwarded-for": "203.0.113.7", "x-forwarded-proto": "https"}
            )
        headers = dict(got.json()["headers"])
        assert headers["x-forwarded-for"] == "203.0.113.7, 127.0.0.1"
        assert headers["x-ketch-client"] == "203.0.113.7"
        assert headers["x-forwarded-proto"] == "https"
        assert resolver.heads[0].client == ("203.0.113.7", 0)


# -- streaming responses ------------------------------------------------------------------


@pytest.mark.spec("W10")
def test_sse_events_arrive_as_they_are_produced(gateway: GatewayThread) -> None:
    arrivals: list[float] = []
    with httpx.Client(base_url=gateway.url) as client, client.stream("GET", "/sse") as resp:
        assert resp.headers["content-type"].startswith("text/event-stream")
        for line in resp.iter_lines():
            if line.startswith("data:"):
                arrivals.append(time.monotonic())
    assert len(arrivals) == 5
    gaps = [b - a for a, b in itertools.pairwise(arrivals)]
    assert all(gap > 0.12 for gap in gaps), gaps  # each event came when it was written
    assert arrivals[-1] - arrivals[0] > 0.6


@pytest.mark.spec("W10")
def test_client_disconnect_stops_the_handler(gateway: GatewayThread) -> None:
    AppEvents.stream_stopped.clear()
    with gateway.raw() as sock:
        sock.sendall(b"GET /forever HTTP/1.1\r\nHost: a\r\n\r\n")
        assert b"tick" in sock.recv(4096)
        time.sleep(0.2)
    assert AppEvents.stream_stopped.wait(5)
    wait_for(lambda: gateway.resolver.releases == ["client_gone"])
    assert gateway.stats["client_gone"] == 1


def test_gateway_close_ends_streams_in_flight(resolver: FakeResolver) -> None:
    AppEvents.stream_stopped.clear()
    gateway = GatewayThread(resolver).__enter__()
    with gateway.raw() as sock:
        try:
            sock.sendall(b"GET /forever HTTP/1.1\r\nHost: a\r\n\r\n")
            assert b"tick" in sock.recv(4096)
        finally:
            gateway.__exit__(None, None, None)  # close the gateway under the open stream
        read_until_closed(sock, 5)  # the client sees its connection end
    assert resolver.releases == ["cancelled"]
    assert AppEvents.stream_stopped.wait(5)


def test_http10_client_gets_a_dechunked_body(gateway: GatewayThread) -> None:
    with gateway.raw() as sock:
        sock.sendall(b"GET /sse HTTP/1.0\r\nHost: a\r\n\r\n")
        data = read_until_closed(sock)
    head, _, body = data.partition(b"\r\n\r\n")
    assert b"transfer-encoding" not in head.lower()
    assert b"connection: close" in head.lower()
    assert body == b"".join(b"data: %d\n\n" % i for i in range(5))


# -- scripted upstreams: framing and failures ---------------------------------------------


def test_response_delimited_by_close(tmp_path: Path) -> None:
    def script(conn: socket.socket, n: int) -> None:
        read_head(conn)
        conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n\r\nhello ")
        time.sleep(0.05)
        conn.sendall(b"world")

    with (
        RawUpstream(tmp_path / "raw.sock", script) as raw,
        GatewayThread(FakeResolver(raw.address)) as gateway,
    ):
        with httpx.Client(base_url=gateway.url) as client:
            got = client.get("/")
        assert got.text == "hello world"
        assert got.headers["connection"] == "close"
        wait_for(lambda: gateway.resolver.releases == ["ok"])


def test_stale_pooled_connection_is_retried(tmp_path: Path) -> None:
    def script(conn: socket.socket, n: int) -> None:
        read_head(conn)
        conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
        if n == 0:
            read_head(conn)  # the second request: closed unanswered, like a keep-alive timeout

    with (
        RawUpstream(tmp_path / "raw.sock", script) as raw,
        GatewayThread(FakeResolver(raw.address)) as gateway,
    ):
        with httpx.Client(base_url=gateway.url) as client:
            assert client.get("/").text == "ok"
            assert client.get("/").text == "ok"
        assert gateway.stats["upstream_retries"] == 1
        assert gateway.stats["upstream_connects"] == 2


def test_upstream_failure_before_and_after_the_response_began(tmp_path: Path) -> None:
    def script(conn: socket.socket, n: int) -> None:
        head = read_head(conn)
        if b"/late" in head:
            conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n0123456789")
        # /early: closed without a byte of response

    with (
        RawUpstream(tmp_path / "raw.sock", script) as raw,
        GatewayThread(FakeResolver(raw.address)) as gateway,
    ):
        with httpx.Client(base_url=gateway.url) as client:
            early = client.post("/early", content=b"x")  # with a body: not retried
            assert early.status_code == 502
            assert early.text.startswith("ketch: ")
            with pytest.raises(httpx.RemoteProtocolError):
                client.get("/late")  # the client sees a cut-off body, not a 502
        wait_for(lambda: gateway.resolver.releases == ["upstream_error", "upstream_error"])


# -- websockets ---------------------------------------------------------------------------


@pytest.mark.spec("W11")
def test_websocket_echo(gateway: GatewayThread) -> None:
    with ws_connect(f"ws://127.0.0.1:{gateway.port}/ws", compression=None, max_size=None) as ws:
        ws.send("hello")
        assert ws.recv() == "hello"
        # A message just under the cap passes (uncompressed: the cap counts wire bytes).
        payload = os.urandom(WS_MAX - 1024)
        ws.send(payload)
        assert ws.recv() == payload
    wait_for(lambda: gateway.resolver.releases == ["ok"])
    assert gateway.resolver.heads[0].is_upgrade
    assert gateway.stats["websockets"] == 1


@pytest.mark.spec("W11")
def test_websocket_message_over_2mib_closes_1009(gateway: GatewayThread) -> None:
    with ws_connect(f"ws://127.0.0.1:{gateway.port}/ws", compression=None, max_size=None) as ws:
        ws.send(b"x" * (3 * 1024 * 1024))
        with pytest.raises(ConnectionClosedError) as info:
            ws.recv()
    assert info.value.rcvd is not None
    assert info.value.rcvd.code == 1009
    wait_for(lambda: gateway.resolver.releases == ["ok"])


# -- memory stays flat while a big body passes --------------------------------------------

GATEWAY_PROCESS = r"""
import asyncio, socket, sys
import uvloop
from ketch._gateway.proxy import Gateway

class Target:
    def __init__(self, address):
        self.address = address
        self.remove_headers = frozenset()
    def release(self, outcome):
        pass

async def main():
    async def resolver(head):
        return Target(sys.argv[1])
    gateway = Gateway(resolver)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    await gateway.serve(sock)
    print(sock.getsockname()[1], flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)  # until stdin closes
    await gateway.close()

uvloop.run(main())
"""


def _peak_rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):  # the high-water mark of resident memory
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


@pytest.mark.spec("W12")
def test_1gib_upload_and_download_stream_with_flat_memory(upstream: UvicornThread) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", GATEWAY_PROCESS, upstream.address],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline())
        with httpx.Client(base_url=f"http://127.0.0.1:{port}") as client:
            for _ in range(3):  # warm up: imports, pools, first buffers
                client.post("/upload", content=os.urandom(1 << 20))
        baseline = _peak_rss(proc.pid)

        block = os.urandom(1 << 20)
        total = 1024 * len(block)
        expected = hashlib.sha256()
        with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
            sock.sendall(b"POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n" % total)
            for _ in range(1024):
                sock.sendall(block)
                expected.update(block)
            status, _, body = read_response(_Reader(sock))
        assert status == 200
        assert json.loads(body) == {"size": total, "sha256": expected.hexdigest()}
        grown = _peak_rss(proc.pid) - baseline
        assert grown < 64 * 1024 * 1024, f"upload: gateway RSS grew by {grown >> 20} MiB"

        # A response to a client that stops reading for a while: the app must be held back,
        # not the gateway made to buffer what it writes meanwhile.
        received = 0
        with (
            httpx.Client(base_url=f"http://127.0.0.1:{port}") as client,
            client.stream("GET", "/download", params={"size": total // 2}) as resp,
        ):
            first = b""
            for i, chunk in enumerate(resp.iter_raw()):
                if i == 0:
                    first = chunk
                    time.sleep(1.0)
                received += len(chunk)
            assert resp.status_code == 200, (resp.headers, first)
        assert received == total // 2
        grown = _peak_rss(proc.pid) - baseline
        assert grown < 64 * 1024 * 1024, f"download: gateway RSS grew by {grown >> 20} MiB"
    finally:
        if proc.stdin is not None:
            proc.stdin.close()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
