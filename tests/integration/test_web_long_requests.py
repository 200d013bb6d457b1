"""Long web requests (W14) on a server of its own whose request timeout is 2 s: a slow
handler's client gets 303 to a result URL, the result URL waits and answers (or redirects
again), reloading never re-runs the handler, and what must not be redirected is not."""

from __future__ import annotations

import contextlib
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from conftest import ServerHandle, _close_client, _use_home
from supports.web_long import SlowStart, app, long_app, past_timeout

TIMEOUT = 2  # the server's request timeout, seconds


@pytest.fixture(scope="module")
def long_server(
    tmp_path_factory: pytest.TempPathFactory, ketch_server: ServerHandle
) -> Iterator[ServerHandle]:
    """A server of this module's own, started with KETCH_REQUEST_TIMEOUT=2."""
    home = tmp_path_factory.mktemp("long-home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("KETCH_REQUEST_TIMEOUT", str(TIMEOUT))
        _use_home(home)
        handle = ServerHandle(home)
        handle.start()
    try:
        yield handle
    finally:
        _close_client()
        handle.stop()
        _use_home(ketch_server.home)


@pytest.fixture(scope="module")
def urls(long_server: ServerHandle) -> Iterator[dict[str, str]]:
    _use_home(long_server.home)
    with app.run(show_logs=False):
        base, slow = long_app.get_web_url(), past_timeout.get_web_url()
        cold = SlowStart().hello.get_web_url()
        assert base is not None and slow is not None and cold is not None
        # Warm: the container's start must not count against the first request's 2 s (on a
        # busy machine it may take longer than that, and is then redirected itself).
        warm = httpx.get(base + "/fast", follow_redirects=True, timeout=60)
        assert warm.status_code == 200
        yield {"base": base, "past_timeout": slow, "slow_start": cold}


def runs(trace: Path) -> int:
    return len(trace.read_text().split()) if trace.exists() else 0


def call_id_of(location: str) -> str:
    return parse_qs(urlsplit(location).query)["__ketch_call_id"][0]


@pytest.mark.spec("W14")
def test_slow_request_redirects_and_the_result_url_waits_for_it(
    urls: dict[str, str], tmp_path: Path
) -> None:
    trace = tmp_path / "runs"
    base = urls["base"]
    with httpx.Client(base_url=base, timeout=30) as client:
        first = client.get("/slow", params={"trace": str(trace), "seconds": 7})
        assert first.status_code == 303, first.text
        assert first.text.startswith("ketch:")
        location = first.headers["location"]
        # The same path and query, plus the call id.
        parts = urlsplit(location)
        assert parts.path == "/slow"
        query = parse_qs(parts.query)
        assert query["trace"] == [str(trace)] and query["seconds"] == ["7"]
        call_id = call_id_of(location)
        assert call_id.startswith("lr-")
        # The client connection is still good for other requests.
        assert client.get("/fast").text == "fast answer"
        # The result URL waits up to another request timeout, then redirects to itself again
        # until the response is there.
        redirects = 0
        while True:
            answer = client.get(location)
            if answer.status_code != 303:
                break
            redirects += 1
            assert answer.headers["location"] == location
        assert redirects >= 1  # the handler sleeps 7 s: more than two request timeouts
        assert answer.status_code == 201 and answer.headers["x-slow"] == "yes"
        assert answer.json()["runs"] == 1 and answer.json()["method"] == "GET"
        # Reloading gives the same response and never runs the handler again.
        again = client.get(location)
        assert (again.status_code, again.content) == (201, answer.content)
        assert again.headers["x-slow"] == "yes"
        # Modal's parameter name reaches the same result.
        modal = client.get(location.replace("__ketch_call_id", "__modal_function_call_id"))
        assert (modal.status_code, modal.content) == (201, answer.content)
        # Anything but GET on a result URL is refused; so is an id the gateway never gave.
        post = client.post(location, content=b"x")
        assert post.status_code == 400 and post.text.startswith("ketch:") and "GET" in post.text
        unknown = client.get("/slow", params={"__ketch_call_id": "lr-nosuchid"})
        assert unknown.status_code == 404 and unknown.text.startswith("ketch:")
        assert "lr-nosuchid" in unknown.text
    assert runs(trace) == 1


@pytest.mark.spec("W14")
def test_clients_following_redirects_get_the_body_from_one_run(
    urls: dict[str, str], tmp_path: Path
) -> None:
    base = urls["base"]
    traces = {name: tmp_path / name for name in ("httpx", "curl", "post")}
    got: dict[str, Any] = {}

    def with_curl() -> None:
        url = httpx.URL(base + "/slow", params={"trace": str(traces["curl"]), "seconds": 3})
        done = subprocess.run(
            ["curl", "-sS", "-L", "--max-time", "60", str(url)],
            capture_output=True,
            text=True,
            timeout=90,
        )
        got["curl"] = done

    curl = threading.Thread(target=with_curl)
    curl.start()
    try:
        resp = httpx.get(
            base + "/slow",
            params={"trace": str(traces["httpx"]), "seconds": 3},
            follow_redirects=True,
            timeout=60,
        )
        # A POST is answered 303 too: the client fetches the result with a GET.
        posted = httpx.post(
            base + "/slow",
            params={"trace": str(traces["post"]), "seconds": 3},
            content=b"payload",
            follow_redirects=True,
            timeout=60,
        )
    finally:
        curl.join(90)
    assert resp.status_code == 201 and [r.status_code for r in resp.history] == [303]
    assert resp.json()["runs"] == 1
    assert call_id_of(str(resp.url)) == call_id_of(resp.history[0].headers["location"])
    assert posted.status_code == 201 and posted.history[0].status_code == 303
    assert posted.json()["method"] == "POST" and posted.json()["body"] == "payload"
    done = got["curl"]
    assert done.returncode == 0, done.stderr
    import json

    assert json.loads(done.stdout)["runs"] == 1
    for trace in traces.values():
        assert runs(trace) == 1


@pytest.mark.spec("W14")
def test_a_stream_that_has_begun_is_never_redirected(urls: dict[str, str]) -> None:
    events = []
    with httpx.stream("GET", urls["base"] + "/stream", params={"n": 4}, timeout=30) as resp:
        assert resp.status_code == 200
        for line in resp.iter_lines():
            if line:
                events.append(line)
    # The stream lasted about 3 s, past the 2 s request timeout, and arrived whole.
    assert events == [f"data: event {i}" for i in range(4)]


@pytest.mark.spec("W14")
def test_fast_responses_are_unchanged(urls: dict[str, str]) -> None:
    with httpx.Client(base_url=urls["base"], timeout=30) as client:
        for _ in range(20):
            resp = client.get("/fast", params={"x": "1"})
            assert resp.status_code == 200 and resp.text == "fast answer"
            assert resp.headers["x-fast"] == "yes" and not resp.history
            assert "location" not in resp.headers


@pytest.mark.spec("W14", "T4")
def test_a_detached_request_past_its_function_timeout_keeps_the_5xx(urls: dict[str, str]) -> None:
    url = urls["past_timeout"]
    resp = httpx.get(url, params={"seconds": 30}, follow_redirects=True, timeout=60)
    assert resp.history and resp.history[0].status_code == 303
    assert resp.status_code >= 500 and resp.text.startswith("ketch:")
    # The same error on a reload; a fresh container answers the next request.
    with contextlib.closing(httpx.Client(timeout=60)) as client:
        reload = client.get(str(resp.url))
        assert (reload.status_code, reload.text) == (resp.status_code, resp.text)
        ok = client.get(url, params={"seconds": 0})
        assert ok.status_code == 200 and ok.json() == {"done": "yes"}


@pytest.mark.spec("W14")
def test_a_request_still_waiting_for_its_container_is_redirected(urls: dict[str, str]) -> None:
    # Nothing runs yet: the request waits for a container whose start takes 3 s.
    resp = httpx.get(urls["slow_start"], follow_redirects=True, timeout=60)
    assert resp.history and resp.history[0].status_code == 303
    assert resp.status_code == 200 and resp.json() == {"hello": "after a slow start"}
