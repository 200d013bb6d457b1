"""The ketch app that bench/objects_bench.py measures (shipped to the containers; the
driver is not)."""

from __future__ import annotations

import time
from typing import Any

import ketch

app = ketch.App("bench-objects")


@app.function(min_containers=8, max_containers=8, scaledown_window=600)
def dict_worker(dict_name: str, gate_name: str, pairs: int) -> dict[str, Any]:
    """`pairs` put+get round trips on keys of its own, started together at a gate."""
    d = ketch.Dict.from_name(dict_name)
    gate = ketch.Queue.from_name(gate_name)
    gate.put(1, partition="arrived")
    gate.get(timeout=300, partition="go")
    me = id(d)
    started = time.perf_counter()
    for i in range(pairs):
        d.put((me, i % 64), i)
        d.get((me, i % 64))
    return {
        "start": time.time() - (time.perf_counter() - started),
        "end": time.time(),
        "pairs": pairs,
    }


@app.function(min_containers=1, max_containers=1, scaledown_window=600)
def queue_producer(queue_name: str, n: int, batch: int) -> float:
    q = ketch.Queue.from_name(queue_name)
    if batch == 1:
        for i in range(n):
            q.put(i)
    else:
        for start in range(0, n, batch):
            q.put_many(list(range(start, min(n, start + batch))))
    return time.time()


@app.function(min_containers=1, max_containers=1, scaledown_window=600)
def queue_consumer(queue_name: str, n: int, batch: int) -> dict[str, float]:
    q = ketch.Queue.from_name(queue_name)
    got = 0
    first = 0.0
    while got < n:
        if batch == 1:
            q.get(timeout=120)
            got += 1
        else:
            got += len(q.get_many(batch, timeout=120))
        if not first:
            first = time.time()
    return {"first": first, "end": time.time()}
