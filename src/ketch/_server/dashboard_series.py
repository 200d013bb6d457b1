"""An hour of per-function rates, latency percentiles and cold starts for the dashboard's
charts, sampled from what `/metrics` reads (the latency histograms and the containers),
every few seconds and off the request path: nothing is added to a request or a call."""

from __future__ import annotations

import asyncio
import collections
import logging
import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from prometheus_client import Histogram

    from ketch._server.main import Server

log = logging.getLogger("ketch.dashboard")

INTERVAL = 10.0
WINDOW = 3600.0
QUANTILES = (0.5, 0.95, 0.99)
Key = tuple[str, str]  # (app name, function tag), as the histograms label them


def quantile(q: float, bounds: Sequence[float], counts: Sequence[float]) -> float | None:
    """The q-quantile of a histogram's observations, from cumulative bucket counts (the
    last bound is +Inf), interpolated linearly inside its bucket as Prometheus'
    `histogram_quantile` does. None without observations."""
    total = counts[-1] if counts else 0
    if total <= 0:
        return None
    rank = q * total
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in zip(bounds, counts, strict=True):
        if count >= rank:
            if math.isinf(bound):
                return lower_bound  # past the largest finite bucket: its bound is all we know
            width = count - lower_count
            share = (rank - lower_count) / width if width else 1.0
            return lower_bound + (bound - lower_bound) * share
        lower_bound, lower_count = bound, count
    return lower_bound


@dataclass
class Point:
    t: float
    web: float  # web requests per second over the interval
    calls: float  # function inputs finished per second
    cold: int  # containers started in the interval
    latency: tuple[float | None, ...]  # QUANTILES of the interval's requests (or calls)


Counts = tuple[list[float], list[float]]  # upper bounds, cumulative counts


class HistogramReader:
    """Cumulative bucket counts per (app, function) of one labelled histogram, summed over
    its other labels. Read from the labelled children directly: prometheus-client's
    `collect()` builds a sample object per bucket, which for hundreds of functions would
    hold the loop for a quarter of a second. A child whose sum has not moved since the last
    read has no new observations, and its counts are not read again."""

    def __init__(self, hist: Histogram) -> None:
        self.hist = hist
        self._sums: dict[tuple[str, ...], float] = {}
        self._counts: dict[tuple[str, ...], list[float]] = {}

    def read(self) -> dict[Key, Counts]:
        metrics = getattr(self.hist, "_metrics", None)
        if not isinstance(metrics, dict):
            return read_histogram(self.hist)  # a prometheus-client without those internals
        with self.hist._lock:  # labels() adds children from the loop's thread meanwhile
            children = list(metrics.items())
        out: dict[Key, Counts] = {}
        for values, child in children:
            total = child._sum.get()
            if self._sums.get(values) != total or values not in self._counts:
                self._sums[values] = total
                running, cumulative = 0.0, []
                for bucket in child._buckets:
                    running += bucket.get()
                    cumulative.append(running)
                self._counts[values] = cumulative
            counts = self._counts[values]
            key = (str(values[0]), str(values[1]))
            if key in out:
                counts = [a + b for a, b in zip(out[key][1], counts, strict=True)]
            out[key] = (list(child._upper_bounds), counts)
        return out


def read_histogram(hist: Histogram) -> dict[Key, Counts]:
    """The same through `collect()`: slower, and only public API."""
    out: dict[Key, Counts] = {}
    for metric in hist.collect():
        per_series: dict[tuple[Any, ...], list[tuple[float, float]]] = collections.defaultdict(list)
        for s in metric.samples:
            if not s.name.endswith("_bucket"):
                continue
            labels = dict(s.labels)
            le = float(labels.pop("le"))
            per_series[tuple(sorted(labels.items()))].append((le, s.value))
        for labels_key, buckets in per_series.items():
            labels = dict(labels_key)
            key = (str(labels.get("app", "")), str(labels.get("function", "")))
            buckets.sort()
            bounds = [b for b, _ in buckets]
            counts = [c for _, c in buckets]
            if key in out:
                counts = [a + b for a, b in zip(out[key][1], counts, strict=True)]
            out[key] = (bounds, counts)
    return out


def _delta(now: Counts | None, before: Counts | None) -> Counts:
    if now is None:
        return [], []
    if before is None or len(before[1]) != len(now[1]):
        return now  # a series first seen since the last sample started from zero
    return now[0], [max(a - b, 0.0) for a, b in zip(now[1], before[1], strict=True)]


@dataclass
class _Source:
    """What one sample reads: both histograms and the live containers per function."""

    web: dict[Key, Counts]
    calls: dict[Key, Counts]
    containers: dict[Key, set[str]] = field(default_factory=dict)


Histograms = Callable[[], tuple[dict[Key, Counts], dict[Key, Counts]]]
Containers = Callable[[], dict[Key, set[str]]]


class Series:
    """Points per function, from samples of (web histogram, call histogram, containers).

    The histograms are read and the points computed in a worker thread (prometheus-client's
    values are locked for that): with hundreds of busy functions a sample takes tens of
    milliseconds of Python, which would otherwise hold up every request on the server's
    loop. The containers are listed on the loop, where the scheduler changes them."""

    def __init__(
        self,
        histograms: Histograms,
        containers: Containers = dict,
        *,
        interval: float = INTERVAL,
        window: float = WINDOW,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._histograms = histograms
        self._containers = containers
        self.interval = interval
        self._clock = clock
        self._keep = int(window / interval) + 1
        self._points: dict[Key, collections.deque[Point]] = {}
        self._last: _Source | None = None
        self._last_t = 0.0
        self._lock = threading.Lock()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        failed = False
        while True:
            try:
                await self.sample_off_loop()
                failed = False
            except Exception:
                if not failed:  # once, until it works again: not every interval
                    log.exception("dashboard sampling failed; retrying")
                failed = True
            await asyncio.sleep(self.interval)

    async def sample_off_loop(self) -> None:
        await asyncio.to_thread(self.sample, self._containers())

    async def fresh(self, min_age: float = 1.0) -> None:
        """Sample now unless the last sample is recent: a page shows the last moments."""
        if self._clock() - self._last_t >= min_age:
            await self.sample_off_loop()

    def sample(self, containers: dict[Key, set[str]] | None = None) -> None:
        with self._lock:
            web, calls = self._histograms()
            src = _Source(web, calls, self._containers() if containers is None else containers)
            self._add(src, self._clock())

    def _add(self, src: _Source, now: float) -> None:
        last, dt = self._last, now - self._last_t
        self._last, self._last_t = src, now
        if last is None or dt <= 0:
            return  # the baseline: no interval to report yet
        for key in set(src.web) | set(src.calls) | set(src.containers):
            web_bounds, web = _delta(src.web.get(key), last.web.get(key))
            call_bounds, calls = _delta(src.calls.get(key), last.calls.get(key))
            cold = len(src.containers.get(key, set()) - last.containers.get(key, set()))
            n_web = web[-1] if web else 0.0
            n_calls = calls[-1] if calls else 0.0
            if not (n_web or n_calls or cold):
                continue
            # A web endpoint's latency is what its clients saw; a function's, its run time.
            bounds, counts = (web_bounds, web) if n_web else (call_bounds, calls)
            latency = tuple(quantile(q, bounds, counts) for q in QUANTILES)
            points = self._points.get(key)
            if points is None:
                points = self._points[key] = collections.deque(maxlen=self._keep)
            points.append(Point(now, n_web / dt, n_calls / dt, cold, latency))
        horizon = now - self._keep * self.interval
        for key in [k for k, p in self._points.items() if p and p[-1].t < horizon]:
            del self._points[key]  # a function quiet for the whole window

    def points(self, key: Key) -> list[Point]:
        with self._lock:
            return list(self._points.get(key, ()))

    def chart_data(self, key: Key) -> dict[str, Any]:
        """Columns for uPlot: times, then one list per series (quiet intervals as 0)."""
        pts = self.points(key)
        return {
            "t": [round(p.t, 3) for p in pts],
            "web": [round(p.web, 4) for p in pts],
            "calls": [round(p.calls, 4) for p in pts],
            "cold": [p.cold for p in pts],
            **{
                f"p{round(q * 100)}": [_ms(p.latency[i]) for p in pts]
                for i, q in enumerate(QUANTILES)
            },
        }


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 3)


def server_series(server: Server) -> Series:
    web = HistogramReader(server.records.web_latency)
    calls = HistogramReader(server.records.call_latency)

    def containers() -> dict[Key, set[str]]:
        out: dict[Key, set[str]] = collections.defaultdict(set)
        for c in server.scheduler.containers.values():
            fdef = c.pool.function
            out[(fdef.app_name, fdef.tag)].add(c.cid)
        return dict(out)

    return Series(lambda: (web.read(), calls.read()), containers)
