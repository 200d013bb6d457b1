"""The dashboard's pure parts (O4): login tokens and session cookies, the time series
behind the charts, and how dict keys are shown without unpickling them."""

from __future__ import annotations

import pickle

import pytest

from ketch._server.dashboard_auth import DashboardAuth
from ketch._server.dashboard_data import describe_key
from ketch._server.dashboard_series import Counts, Key, Series, _Source, quantile


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


# -- sessions ---------------------------------------------------------------------------------
@pytest.mark.spec("O4")
def test_a_login_token_works_once_and_only_before_it_expires() -> None:
    clock = Clock()
    auth = DashboardAuth("kt-server", clock=clock, login_ttl=120)
    token = auth.new_login()
    cookie = auth.redeem(token)
    assert cookie is not None and auth.session(cookie) is not None
    assert auth.redeem(token) is None  # used
    late = auth.new_login()
    clock.now += 121
    assert auth.redeem(late) is None  # expired
    assert auth.redeem("made-up") is None


@pytest.mark.spec("O4")
def test_a_session_cookie_is_bound_to_its_server_and_cannot_be_altered() -> None:
    clock = Clock()
    here, there = DashboardAuth("kt-here", clock=clock), DashboardAuth("kt-there", clock=clock)
    assert here.cookie_name != there.cookie_name  # side by side on one host
    cookie = here.redeem(here.new_login())
    assert cookie is not None
    assert there.session(cookie) is None
    sid, until, mac = cookie.split(".")
    assert here.session(f"{sid}.{int(until) + 3600}.{mac}") is None  # extended by hand
    assert here.session(f"other.{until}.{mac}") is None
    for junk in ("", "a.b", "a.b.c.d", f"{sid}.x.{mac}"):
        assert here.session(junk) is None
    clock.now += here.session_ttl + 1
    assert here.session(cookie) is None  # expired


@pytest.mark.spec("O4")
def test_csrf_tokens_are_per_session_and_logout_ends_a_session() -> None:
    auth = DashboardAuth("kt-server")
    a = auth.session(auth.redeem(auth.new_login()))
    b = auth.session(auth.redeem(auth.new_login()))
    assert a and b and a != b
    assert auth.csrf_ok(a, auth.csrf(a)) and not auth.csrf_ok(a, auth.csrf(b))
    assert not auth.csrf_ok(a, "")
    cookie = auth.redeem(auth.new_login())
    sid = auth.session(cookie)
    assert sid is not None
    auth.end(sid)
    assert auth.session(cookie) is None


@pytest.mark.spec("O4")
def test_unredeemed_login_tokens_are_bounded() -> None:
    auth = DashboardAuth("kt-server")
    first = auth.new_login()
    for _ in range(1000):
        auth.new_login()
    assert auth.redeem(first) is None  # the oldest went first
    assert len(auth._pending) == 1000


# -- charts -----------------------------------------------------------------------------------
def test_quantiles_interpolate_inside_their_bucket() -> None:
    bounds = [0.1, 0.5, 1.0, float("inf")]
    assert quantile(0.5, bounds, [0, 0, 0, 0]) is None
    assert quantile(0.5, bounds, [10, 10, 10, 10]) == pytest.approx(0.05)
    assert quantile(0.5, bounds, [0, 10, 10, 10]) == pytest.approx(0.3)
    assert quantile(0.99, bounds, [0, 0, 0, 5]) == 1.0  # past the last finite bound


def _hist(*counts: float) -> tuple[list[float], list[float]]:
    return [0.01, 0.1, 1.0, float("inf")], list(counts)


@pytest.mark.spec("O4")
def test_series_points_come_from_deltas_between_samples() -> None:
    clock = Clock()
    key = ("app", "f")
    sources = [
        _Source({key: _hist(0, 0, 0, 0)}, {}, {key: {"c1"}}),
        _Source({key: _hist(5, 10, 10, 10)}, {}, {key: {"c1", "c2"}}),  # 10 requests, 1 start
        _Source({key: _hist(5, 10, 10, 10)}, {}, {key: {"c2"}}),  # quiet: no point
        _Source({key: _hist(5, 10, 30, 30)}, {}, {key: {"c2"}}),  # 20 slower ones
    ]
    feed = iter(sources)
    current: list[_Source] = []

    def histograms() -> tuple[dict[Key, Counts], dict[Key, Counts]]:
        current[:] = [next(feed)]
        return current[0].web, current[0].calls

    series = Series(histograms, lambda: current[0].containers, interval=10, clock=clock)
    for _ in sources:
        series.sample()
        clock.now += 10
    points = series.points(key)
    assert [p.web for p in points] == [1.0, 2.0]
    assert [p.cold for p in points] == [1, 0]
    first, second = points
    assert first.latency[0] is not None and first.latency[0] <= 0.1
    assert second.latency[0] is not None and second.latency[0] > 0.1
    data = series.chart_data(key)
    assert data["web"] == [1.0, 2.0] and len(data["t"]) == 2 and data["p50"][0] <= 100


def test_series_forget_functions_quiet_for_the_whole_window() -> None:
    clock = Clock()
    key = ("app", "f")
    counts = iter([0, 3] + [3] * 400)
    series = Series(
        lambda: ({key: _hist(0, 0, 0, next(counts))}, {}), interval=10, window=100, clock=clock
    )
    series.sample()
    clock.now += 10
    series.sample()
    assert len(series.points(key)) == 1
    for _ in range(15):
        clock.now += 10
        series.sample()
    assert series.points(key) == []


def test_a_sample_is_taken_off_the_servers_loop() -> None:
    import asyncio
    import threading

    readers: list[threading.Thread] = []

    def histograms() -> tuple[dict[Key, Counts], dict[Key, Counts]]:
        readers.append(threading.current_thread())
        return {}, {}

    series = Series(histograms)
    asyncio.run(series.sample_off_loop())
    asyncio.run(series.fresh(min_age=0))
    assert len(readers) == 2 and threading.main_thread() not in readers


def test_histograms_read_from_their_children_match_what_collect_says() -> None:
    from prometheus_client import CollectorRegistry, Histogram

    from ketch._server.dashboard_series import HistogramReader, read_histogram

    hist = Histogram(
        "h",
        "h",
        ["app", "function", "status"],
        buckets=(0.01, 0.1, 1.0),
        registry=CollectorRegistry(),
    )
    reader = HistogramReader(hist)
    assert reader.read() == {}
    for value, status in ((0.005, "2xx"), (0.05, "2xx"), (0.5, "5xx"), (5.0, "2xx")):
        hist.labels("app", "f", status).observe(value)
    hist.labels("app", "g", "2xx").observe(0.05)
    assert reader.read() == read_histogram(hist)
    assert reader.read()[("app", "f")] == ([0.01, 0.1, 1.0, float("inf")], [1, 2, 3, 4])
    hist.labels("app", "g", "2xx").observe(0.5)  # only this child moved
    assert reader.read() == read_histogram(hist)
    assert reader.read()[("app", "g")][1] == [0, 1, 2, 2]


# -- dict keys --------------------------------------------------------------------------------
class Boom:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (print, ("unpickled!",))


@pytest.mark.spec("O4")
def test_dict_keys_are_read_from_their_pickle_without_loading_it(
    capsys: pytest.CaptureFixture[str],
) -> None:
    for key in ("greeting", 42, 2**70, 1.5, b"raw", None, True):
        for protocol in (3, 5):  # (protocol 2 pickles bytes through a global)
            assert describe_key(pickle.dumps(key, protocol=protocol)) == repr(key)
    for other in ((1, 2), frozenset({1}), Boom()):
        text = describe_key(pickle.dumps(other))
        assert text.startswith("<pickled object, ") and text.endswith(" bytes>")
    assert describe_key(b"\x80\x05garbage").startswith("<pickled object")
    assert "unpickled!" not in capsys.readouterr().out
