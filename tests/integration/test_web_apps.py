"""Whole web apps through the real gateway: ASGI lifespan once per container (W2), a WSGI
app serving concurrent requests on threads (W3), WebSockets through an ASGI app (W11).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from websockets.exceptions import ConnectionClosedError
from websockets.sync.client import connect as ws_connect

from supports import web_apps as w
from supports import web_lifespan
from supports.web_helpers import containers, runtime_pids, wait_for


@pytest.fixture(scope="module")
def app_id(ketch_server: Any) -> Iterator[str]:
    with w.app.run(show_logs=False):
        assert w.app.app_id is not None
        yield w.app.app_id


def ws_url(http_url: str | None, path: str = "/ws") -> str:
    assert http_url is not None
    return "ws" + http_url.removeprefix("http") + path


@pytest.mark.spec("W2")
def test_asgi_lifespan_runs_once_per_container(ketch_server: Any) -> None:
    with web_lifespan.app.run(show_logs=False):
        app_id = web_lifespan.app.app_id
        assert app_id is not None
        url = web_lifespan.lifespan_app.get_web_url()
        assert url is not None
        with ThreadPoolExecutor(6) as pool:
            seen = list(pool.map(lambda _: httpx.get(url, timeout=60).json(), range(12)))
        assert len({s["cid"] for s in seen}) == 1  # max_containers=1: one container
        log = web_lifespan.lifespan_log(seen[0]["cid"])
        try:
            assert log.read_text() == "startup\n"
            echoed = httpx.post(url + "/echo", json={"a": [1, 2]}, timeout=60)
            assert echoed.json() == {"a": [1, 2]}
        except BaseException:
            log.unlink(missing_ok=True)
            raise
    # Stopping the app stops its container, which runs the shutdown half once.
    try:
        wait_for(lambda: not runtime_pids(app_id), timeout=30, what="the container to stop")
        assert log.read_text() == "startup\nshutdown\n"
    finally:
        log.unlink(missing_ok=True)


@pytest.mark.spec("W3")
def test_wsgi_requests_run_concurrently_on_threads(app_id: str) -> None:
    url = w.wsgi_sleeper.get_web_url()
    assert url is not None
    with httpx.Client(timeout=60, limits=httpx.Limits(max_connections=8)) as client:
        first = client.get(url + "/warm")  # the cold start is not what is measured
        assert first.status_code == 200 and first.text.split()[2:4] == ["GET", "/warm"]
        started = time.monotonic()
        with ThreadPoolExecutor(4) as pool:
            bodies = list(pool.map(lambda i: client.get(f"{url}/r{i}").text, range(4)))
        elapsed = time.monotonic() - started
    rows = [b.split() for b in bodies]
    assert sorted(r[3] for r in rows) == [f"/r{i}" for i in range(4)]
    assert len({r[0] for r in rows}) == 1, bodies  # max_containers=1: one container
    # The four ran at the same time (each sleeps a second), each on a thread of its own.
    begin, end = max(float(r[4]) for r in rows), min(float(r[5]) for r in rows)
    assert begin < end, f"the requests did not overlap: {bodies}"
    assert len({r[1] for r in rows}) == 4, bodies
    assert elapsed < 3 * w.WSGI_SLEEP, f"took {elapsed:.2f}s: not concurrent"


@pytest.mark.spec("W11")
def test_websocket_echo_through_an_asgi_app(app_id: str) -> None:
    url = w.sockets.get_web_url()
    assert httpx.get(url or "", timeout=60).text == "hello over http"
    with ws_connect(ws_url(url), max_size=None, open_timeout=60) as ws:
        ws.send("hello")
        assert ws.recv(timeout=30) == "hello"
        blob = bytes(range(256)) * 4096  # 1 MiB, binary
        ws.send(blob)
        assert ws.recv(timeout=30) == blob
        just_under = b"z" * (2 * 1024 * 1024 - 64)
        ws.send(just_under)
        assert ws.recv(timeout=30) == just_under


@pytest.mark.spec("W11")
def test_websocket_message_over_2mib_closes_with_1009(app_id: str) -> None:
    url = w.sockets.get_web_url()
    with ws_connect(ws_url(url), max_size=None, open_timeout=60) as ws:
        ws.send("still fine")
        assert ws.recv(timeout=30) == "still fine"
        ws.send(b"x" * (3 * 1024 * 1024))
        with pytest.raises(ConnectionClosedError) as info:
            ws.recv(timeout=30)
    assert info.value.rcvd is not None and info.value.rcvd.code == 1009


@pytest.mark.spec("W11")
def test_a_websocket_connection_is_one_input(app_id: str) -> None:
    url = w.one_at_a_time.get_web_url()
    assert url is not None
    assert httpx.get(url, timeout=60).text == "pong"
    with ws_connect(ws_url(url), open_timeout=60) as ws:
        ws.send("held")
        assert ws.recv(timeout=30) == "held"
        # The connection holds the only slot (one input, one container): a request waits.
        with pytest.raises(httpx.ReadTimeout):
            httpx.get(url, timeout=httpx.Timeout(60, read=1.5))
        assert len(containers(app_id, "one_at_a_time")) == 1
    with contextlib.suppress(Exception):
        ws.close()
    # Closed: the slot is free again.
    assert httpx.get(url, timeout=30).text == "pong"
