"""Prometheus metrics, read from the server's live counters at scrape time (so the request
and call paths pay nothing for them)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector, CollectorRegistry

if TYPE_CHECKING:
    from ketch._server.main import Server

_SCHEDULER_COUNTERS = {
    "inputs": "Function inputs submitted (calls, map items, spawns)",
    "web_requests": "Web requests that reached a function",
    "cold_starts": "Containers started",
    "crashes": "Containers that died with inputs in flight",
    "timeouts": "Inputs that ran past their timeout",
    "retries": "Retries scheduled after a failed attempt",
}


class _ServerCollector(Collector):
    def __init__(self, server: Server) -> None:
        self.server = server

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        sched = self.server.scheduler
        for key, doc in _SCHEDULER_COUNTERS.items():
            yield CounterMetricFamily(f"ketch_{key}", doc, value=sched.counters.get(key, 0))
        stats = self.server.web.gateway.stats
        responses = CounterMetricFamily(
            "ketch_gateway_responses", "Gateway responses by status class", labels=["status"]
        )
        for key, value in sorted(stats.items()):
            if key.startswith("responses_"):
                responses.add_metric([key.removeprefix("responses_")], value)
        yield responses
        for key in (
            "requests",
            "denied",
            "timeouts",
            "client_gone",
            "upstream_errors",
            "websockets",
        ):
            yield CounterMetricFamily(
                f"ketch_gateway_{key}", f"Gateway {key}", value=stats.get(key, 0)
            )
        states: Counter[tuple[str, str]] = Counter()
        for c in sched.containers.values():
            states[(c.pool.function.tag, c.state)] += 1
        containers = GaugeMetricFamily(
            "ketch_containers", "Containers by function and state", labels=["function", "state"]
        )
        for (function, state), n in sorted(states.items()):
            containers.add_metric([function, state], n)
        yield containers
        depth: Counter[str] = Counter()
        for pool in sched.pools.values():
            depth[pool.function.tag] += len(pool.queue)
        queue = GaugeMetricFamily(
            "ketch_queue_depth", "Queued inputs by function", labels=["function"]
        )
        for function, n in sorted(depth.items()):
            queue.add_metric([function], n)
        yield queue


def registry_for(server: Server) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_ServerCollector(server))
    # The latency histograms are observed as requests and calls finish (records.py).
    registry.register(server.records.web_latency)
    registry.register(server.records.call_latency)
    return registry
