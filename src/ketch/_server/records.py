"""Per-call records and latency histograms, fed from the scheduler's completion hooks.

The gateway is the hot path: a finished web request costs an append to an in-memory buffer
and one histogram observation; the buffer reaches SQLite from the server's 1 s tick.
"""

from __future__ import annotations

import collections
import time
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Histogram

from ketch._server.store import CallRecords, Store

if TYPE_CHECKING:
    from ketch._server.model import Input, WebRequest

# Web requests from quick handlers to long ones; calls reach further (batch work).
_WEB_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
)
_CALL_BUCKETS = (
    0.001,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    300.0,
    900.0,
    3600.0,
)

WebRow = tuple[str, str, str, int, str, float, float]


class CallRecorder:
    def __init__(self, store: Store, keep_per_app: int) -> None:
        self.records = CallRecords(store)
        self.keep = keep_per_app
        # Bounded per app between flushes, so a flood cannot grow memory without limit.
        self._pending: dict[str, collections.deque[WebRow]] = {}
        self.registry = CollectorRegistry(auto_describe=False)
        self.web_latency = Histogram(
            "ketch_web_request_duration_seconds",
            "Web request latency at the gateway (container wait included), by endpoint and "
            "status class",
            ["app", "function", "status"],
            buckets=_WEB_BUCKETS,
            registry=self.registry,
        )
        self.call_latency = Histogram(
            "ketch_call_duration_seconds",
            "Function input execution time in its container (last attempt), by function",
            ["app", "function", "outcome"],
            buckets=_CALL_BUCKETS,
            registry=self.registry,
        )
        # Labelled children cached: .labels() takes a lock and builds a tuple every time.
        self._web_children: dict[tuple[str, str, int], Any] = {}
        self._call_children: dict[tuple[str, str, bool], Any] = {}

    # -- hooks (called on the server's loop) ---------------------------------------------
    def web_done(self, inp: WebRequest, outcome: str, status: int) -> None:
        now = time.monotonic()
        fdef = inp.function
        duration = now - inp.created
        key = (fdef.app_name, fdef.tag, status // 100)
        child = self._web_children.get(key)
        if child is None:
            klass = f"{status // 100}xx" if status else "none"
            child = self._web_children[key] = self.web_latency.labels(
                fdef.app_name, fdef.tag, klass
            )
        child.observe(duration)
        queue = self._pending.get(fdef.app_id)
        if queue is None:
            queue = self._pending[fdef.app_id] = collections.deque(maxlen=max(self.keep, 1))
        queue.append(
            (inp.iid, fdef.app_id, fdef.tag, status, outcome, time.time() - duration, duration)
        )

    def input_done(self, inp: Input, ok: bool) -> None:
        if inp.started is None:
            return  # never ran (failed while queued)
        fdef = inp.function
        key = (fdef.app_name, fdef.tag, ok)
        child = self._call_children.get(key)
        if child is None:
            child = self._call_children[key] = self.call_latency.labels(
                fdef.app_name, fdef.tag, "ok" if ok else "error"
            )
        child.observe(time.monotonic() - inp.started)

    # -- the tick -------------------------------------------------------------------------
    def flush(self) -> int:
        """Write buffered web call records; keep the newest `keep` per app."""
        if not self._pending:
            return 0
        pending, self._pending = self._pending, {}
        rows = [row for queue in pending.values() for row in queue]
        self.records.add_web(rows)
        for app_id in pending:
            self.records.trim_web(app_id, self.keep)
        return len(rows)
