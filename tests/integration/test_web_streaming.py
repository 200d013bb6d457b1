"""Streaming responses through the real gateway (W10): server-sent events reach the client
as they are produced, from sync and async generators and from `.remote_gen()` and `.map()`
of other functions; a client that leaves cancels the handler.

One ephemeral run of `supports/web_streaming.py` serves the whole module.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from supports import web_streaming as w
from supports.web_helpers import wait_for


@pytest.fixture(scope="module")
def running(ketch_server: Any) -> Iterator[None]:
    with w.app.run(show_logs=False):
        yield


def timed_events(url: str, **params: Any) -> tuple[str, list[tuple[float, str]]]:
    """(content type, [(seconds since the request, event text)]) as the client sees them."""
    events: list[tuple[float, str]] = []
    buffer = ""
    with httpx.stream("GET", url, params=params, timeout=60) as r:
        assert r.status_code == 200, r.read()
        started = time.monotonic()
        for chunk in r.iter_text():
            buffer += chunk
            while "\n\n" in buffer:
                event, buffer = buffer.split("\n\n", 1)
                events.append((time.monotonic() - started, event))
        return r.headers["content-type"], events


def assert_spread(events: list[tuple[float, str]], gap: float) -> None:
    """Events arrived one by one, about `gap` apart, rather than held back and sent together.
    Lower bounds only, with room for one hiccup: a busy machine may delay a read (and so
    bunch two events up at the client), but it never hurries an event."""
    times = [t for t, _ in events]
    assert times[-1] - times[0] > gap * (len(times) - 1) * 0.6, f"events bunched up: {times}"
    spaced = [b - a > gap * 0.5 for a, b in itertools.pairwise(times)]
    assert spaced.count(False) <= 1, f"events bunched up: {times}"


@pytest.mark.spec("W10")
@pytest.mark.parametrize("fn", ["sse_sync", "sse_async"])
def test_sse_events_arrive_as_produced(running: None, fn: str) -> None:
    kind, events = timed_events(getattr(w, fn).get_web_url(), n=5)
    assert kind.startswith("text/event-stream")
    flavour = fn.removeprefix("sse_")
    assert [e for _, e in events] == [f"data: {flavour} {i}" for i in range(5)]
    assert_spread(events, w.GAP)


@pytest.mark.spec("W10")
def test_remote_gen_feeds_a_streaming_response(running: None) -> None:
    kind, events = timed_events(w.via_remote_gen.get_web_url(), n=4)
    assert kind.startswith("text/event-stream")
    assert [e for _, e in events] == [f"data: result {i}" for i in range(4)]
    assert_spread(events, w.GAP)


@pytest.mark.spec("W10")
def test_map_feeds_a_streaming_response(running: None) -> None:
    with httpx.stream("GET", w.via_map.get_web_url(), params={"n": 6}, timeout=60) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/plain")
        body = r.read().decode()
    assert body == "".join(f"segment {i}\n" for i in range(6))
    _, events = timed_events(w.via_map_aio.get_web_url(), n=6)
    assert [e for _, e in events] == [f"data: segment {i}" for i in range(6)]


@pytest.mark.spec("W10")
@pytest.mark.parametrize("fn, last", [("endless", "cancelled"), ("endless_sync", "closed")])
def test_client_disconnect_cancels_the_handler(
    running: None, tmp_path: Path, fn: str, last: str
) -> None:
    marker = tmp_path / "marker"
    with httpx.stream(
        "GET", getattr(w, fn).get_web_url(), params={"marker": str(marker)}, timeout=60
    ) as r:
        ticks = r.iter_text()
        got = ""
        while got.count("tick") < 3:
            got += next(ticks)
    assert marker.read_text().startswith("started")
    wait_for(lambda: last in marker.read_text(), timeout=10, what=f"the handler {last}")
