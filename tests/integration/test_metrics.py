"""Prometheus metrics at /metrics move by the right amounts (O2)."""

from __future__ import annotations

import re

import httpx
import pytest

from supports.basic import app, fail, square


def _scrape(server) -> dict[str, float]:  # type: ignore[no-untyped-def]
    text = httpx.get(f"http://127.0.0.1:{server.info()['api_port']}/metrics").text
    values: dict[str, float] = {}
    for line in text.splitlines():
        match = re.match(r"^(ketch_[a-z_]+(?:\{[^}]*\})?) ([0-9.e+-]+)$", line)
        if match:
            values[match.group(1)] = float(match.group(2))
    return values


@pytest.mark.spec("O2")
def test_counters_move_with_traffic(server) -> None:  # type: ignore[no-untyped-def]
    with app.run(show_logs=False):
        square.remote(1)  # a warm container: the rest costs no cold start
        before = _scrape(server)
        assert [square.remote(i) for i in range(3)] == [0, 1, 4]
        with pytest.raises(ValueError):
            fail.remote("value")
        after = _scrape(server)
    assert after["ketch_inputs_total"] - before["ketch_inputs_total"] == 4
    assert after["ketch_cold_starts_total"] - before["ketch_cold_starts_total"] == 1
    assert 'ketch_containers{function="square",state="ready"}' in after


def _histogram_count(values: dict[str, float], name: str, **labels: str) -> float:
    """The `_count` sample of one labelled histogram series (0 before its first sample)."""
    for key, value in values.items():
        if key.startswith(f"{name}_count{{") and all(
            f'{k}="{v}"' in key for k, v in labels.items()
        ):
            return value
    return 0.0


@pytest.mark.spec("O2")
def test_latency_histograms_count_each_request_and_call(server) -> None:  # type: ignore[no-untyped-def]
    import time

    from supports import ops_web

    with ops_web.app.run(show_logs=False):
        url = ops_web.ping.get_web_url()
        assert url is not None
        assert httpx.get(url, timeout=60).json() == {"pong": 0}  # warm: the rest is steady
        assert ops_web.triple.remote(1) == 3
        web = {"app": "ketch-ops-web", "function": "ping", "status": "2xx"}
        call = {"app": "ketch-ops-web", "function": "triple", "outcome": "ok"}

        def counts() -> tuple[float, float]:
            values = _scrape(server)
            return (
                _histogram_count(values, "ketch_web_request_duration_seconds", **web),
                _histogram_count(values, "ketch_call_duration_seconds", **call),
            )

        # The warm-up request is observed once its exchange ends, a moment after the answer.
        deadline = time.monotonic() + 30
        while counts()[0] < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        web_before, call_before = counts()
        with httpx.Client(timeout=60) as client:
            for i in range(7):
                assert client.get(url, params={"n": i}).json() == {"pong": i}
        assert [ops_web.triple.remote(i) for i in range(4)] == [0, 3, 6, 9]
        while counts()[0] < web_before + 7 and time.monotonic() < deadline + 30:
            time.sleep(0.05)
        time.sleep(0.3)  # nothing more may come in
        web_after, call_after = counts()
    assert web_after - web_before == 7
    assert call_after - call_before == 4
    text = httpx.get(f"http://127.0.0.1:{server.info()['api_port']}/metrics").text
    assert "# TYPE ketch_web_request_duration_seconds histogram" in text
    assert 'ketch_call_duration_seconds_bucket{app="ketch-ops-web",function="triple",' in text
