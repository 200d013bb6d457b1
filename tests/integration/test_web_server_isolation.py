"""`web_server` containers on one host (W4, W11, A2b, R5): each has a network namespace of
its own, so two containers of one function both serve port 8000 at once; they still reach
services on the host's loopback (at KETCH_HOST_ADDR, 10.0.2.2); WebSockets pass; a port
that never opens fails the start-up with a clear error; no network helper outlives its
container.

The servers inside the containers are the standard library's (tests/supports/web_iso_apps.py).
"""

from __future__ import annotations

import shutil
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.sync.client import connect as ws_connect

from ketch._backends.local import HOST_LOOPBACK_ADDR
from supports import web_iso_apps
from supports.ident import ancestors, host_pid

HOLD_TIMEOUT = 90.0


class HostService:
    """An HTTP server on the host's loopback, for containers to call: `/ping` answers at
    once; `/arrive` holds each caller until the test releases them all, so that a test can
    be sure two requests are inside containers at the same time."""

    def __init__(self) -> None:
        self.arrived = 0
        self.cond = threading.Condition()
        self.released = threading.Event()
        service = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                if self.path == "/arrive":
                    with service.cond:
                        service.arrived += 1
                        service.cond.notify_all()
                    body = b"released" if service.released.wait(HOLD_TIMEOUT) else b"timeout"
                else:
                    body = b"pong from the host's loopback"
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def wait_arrivals(self, n: int, timeout: float) -> bool:
        with self.cond:
            return self.cond.wait_for(lambda: self.arrived >= n, timeout)

    def close(self) -> None:
        self.released.set()
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(10)


@pytest.fixture
def host_service() -> Iterator[HostService]:
    service = HostService()
    yield service
    service.close()


def _helpers_of(pids: set[int]) -> list[int]:
    """Live slirp4netns processes serving the containers with these pids."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if (
            argv
            and argv[0].endswith(b"slirp4netns")
            and any(str(pid).encode() in argv for pid in pids)
        ):
            found.append(int(entry.name))
    return found


def _started_for(who: str, server_pid: int | None) -> set[int]:
    """The host pids of a container's runtime (`who`, a `supports.ident` identity) and of
    its ancestors below the server: the process the server started for it is one of them."""
    assert server_pid is not None
    runtime = host_pid(who)
    chain = [runtime, *ancestors(runtime)]
    assert server_pid in chain, chain
    return set(chain[: chain.index(server_pid)])


def _wait_no_helpers(pids: set[int], timeout: float = 30.0) -> list[int]:
    deadline = time.monotonic() + timeout
    while (left := _helpers_of(pids)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return left


@pytest.mark.spec("W4")
def test_slirp4netns_is_installed() -> None:
    # web_server containers need it (scripts/setup installs it when run as root).
    assert shutil.which("slirp4netns"), "slirp4netns is missing: apt-get install slirp4netns"


@pytest.mark.spec("W4")
@pytest.mark.spec("A2b")
def test_two_containers_serve_the_same_port_at_once(server: Any, host_service: HostService) -> None:
    pids: set[int] = set()
    try:
        with web_iso_apps.app.run(show_logs=False):
            url = web_iso_apps.echo.get_web_url()
            assert url
            with ThreadPoolExecutor(2) as pool:
                held = [
                    pool.submit(
                        httpx.get,
                        f"{url}/fetch",
                        params={"port": host_service.port, "path": "/arrive"},
                        timeout=HOLD_TIMEOUT + 60,
                    )
                    for _ in range(2)
                ]
                # max_inputs=1: the second request can only be inside a second container.
                both = host_service.wait_arrivals(2, HOLD_TIMEOUT)
                host_service.released.set()
                answers = [f.result() for f in held]
            assert both, "the two requests were never inside containers at the same time"
            for r in answers:
                assert r.status_code == 200, r.text
            got = [r.json() for r in answers]
            assert {g["fetched"] for g in got} == {"released"}
            assert len({g["cid"] for g in got}) == 2, got
            assert len({g["pid"] for g in got}) == 2, got
            # slirp4netns is given the host pid of the process the server started for the
            # container: the runtime itself, or (sandboxed) the sandbox around it.
            started = [_started_for(g["pid"], server.pid()) for g in got]
            pids = {p for chain in started for p in chain}
            assert all(_helpers_of(chain) for chain in started), "each container has its helper"
    finally:
        # The helpers go with their containers (the app stopped them).
        assert not _wait_no_helpers(pids), "slirp4netns outlived its container"


@pytest.mark.spec("W4")
def test_http_server_subprocesses_on_the_same_port(server: object) -> None:
    roots: list[str] = []
    try:
        with web_iso_apps.files_app.run(show_logs=False):
            url = web_iso_apps.files.get_web_url()
            assert url
            host, port = httpx.URL(url).host, httpx.URL(url).port
            assert port is not None
            # Keep one container busy: ask for the big file and read only its first line,
            # so that its response stalls in flight (max_inputs=1).
            with socket.create_connection((host, port), timeout=60) as busy:
                busy.sendall(f"GET /big.bin HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
                received = b""
                while b"\r\n\r\n" not in received or not received.split(b"\r\n\r\n", 1)[1].count(
                    b"\n"
                ):
                    chunk = busy.recv(4096)
                    assert chunk, "the big file's response ended early"
                    received += chunk
                head, body = received.split(b"\r\n\r\n", 1)
                assert head.startswith(b"HTTP/1.0 200") or head.startswith(b"HTTP/1.1 200")
                first_cid, first_root = body.split(b"\n", 1)[0].decode().split()
                roots.append(first_root)
                # ...and the other container answers meanwhile, on its own port 8000.
                r = httpx.get(f"{url}/id.txt", timeout=60)
                assert r.status_code == 200, r.text
                second_cid, second_root = r.text.split()
                roots.append(second_root)
            assert first_cid != second_cid
            assert first_cid.startswith("ta-") and second_cid.startswith("ta-")
    finally:
        for root in roots:
            shutil.rmtree(root, ignore_errors=True)


@pytest.mark.spec("A2b")
def test_host_loopback_is_reachable_at_the_documented_address(
    server: object, host_service: HostService
) -> None:
    with web_iso_apps.app.run(show_logs=False):
        url = web_iso_apps.echo.get_web_url()
        r = httpx.get(
            f"{url}/fetch", params={"port": host_service.port, "path": "/ping"}, timeout=60
        )
    assert r.status_code == 200, r.text
    assert r.json()["fetched"] == "pong from the host's loopback"
    assert r.json()["host_addr"] == HOST_LOOPBACK_ADDR == "10.0.2.2"


@pytest.mark.spec("A2b")
def test_block_network_serves_web_traffic_but_reaches_nothing(
    server: object, host_service: HostService
) -> None:
    with web_iso_apps.app.run(show_logs=False):
        url = web_iso_apps.blocked.get_web_url()
        r = httpx.get(
            f"{url}/fetch", params={"port": host_service.port, "path": "/ping"}, timeout=60
        )
    assert r.status_code == 200, r.text
    assert r.json()["host_addr"] is None
    assert "error" in r.json() and "fetched" not in r.json(), r.json()


@pytest.mark.spec("W4")
@pytest.mark.spec("W11")
def test_websocket_through_a_web_server(server: object) -> None:
    with web_iso_apps.app.run(show_logs=False):
        url = web_iso_apps.echo.get_web_url()
        assert url
        cid = httpx.get(f"{url}/whoami", timeout=60).json()["cid"]
        big = bytes(range(256)) * 4096  # 1 MiB, through the bridge and back
        with ws_connect(
            url.replace("http://", "ws://") + "/ws", max_size=2**21, open_timeout=60
        ) as ws:
            ws.send("hello")
            assert ws.recv(timeout=30) == f"{cid}:hello"
            ws.send(big)
            assert ws.recv(timeout=30) == big
            ws.send("again")
            assert ws.recv(timeout=30) == f"{cid}:again"


@pytest.mark.spec("W4")
@pytest.mark.spec("R5")
def test_port_that_never_opens_fails_the_start_clearly(server: object) -> None:
    with web_iso_apps.app.run(show_logs=False):
        r = httpx.get(web_iso_apps.never_listens.get_web_url() or "", timeout=60)
        assert r.status_code == 502
        assert "never_listens failed to start" in r.text
        assert "nothing accepted connections on port 8000" in r.text
        assert "startup_timeout=1s" in r.text
        # The function's own error, when it fails before the port opens.
        r = httpx.get(web_iso_apps.fails_to_start.get_web_url() or "", timeout=60)
        assert r.status_code == 502
        assert "could not start its server" in r.text
