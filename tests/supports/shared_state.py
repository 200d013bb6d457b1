"""Functions that share state through ketch.Dict and ketch.Queue (D1, D2)."""

import time
from typing import Any

import ketch
from supports import ident

app = ketch.App("shared-state")


@app.function(max_containers=8, scaledown_window=2)
def increment(dict_name: str, gate_name: str, times: int) -> dict[str, Any]:
    """Add 1 to d["counter"] `times` times through a compare-and-set loop.

    The claim `put(("claim", n + 1), ..., skip_if_exists=True)` succeeds for exactly one
    writer per value of n; only that writer then stores n + 1, so no update is lost.
    Before counting, every input waits at a gate the test opens once all 8 have arrived,
    which proves they run at the same time in 8 containers.
    """
    d = ketch.Dict.from_name(dict_name)
    gate = ketch.Queue.from_name(gate_name)
    me = ident.me()  # by `supports.ident`: a sandboxed pid is not unique
    gate.put(me, partition="arrived")
    gate.get(timeout=120, partition="go")
    retries = 0
    for _ in range(times):
        while True:
            n = d.get("counter", 0)
            if d.put(("claim", n + 1), me, skip_if_exists=True):
                d["counter"] = n + 1
                break
            retries += 1
    return {"pid": me, "retries": retries}


@app.function()
def produce(queue_name: str, n: int, batch: int) -> int:
    q = ketch.Queue.from_name(queue_name)
    for start in range(0, n, batch):
        # Blocks while the partition is full (5,000 items): consumers make room.
        q.put_many(list(range(start, min(n, start + batch))), timeout=120)
    return n


@app.function(max_containers=3)
def consume(queue_name: str) -> dict[str, Any]:
    """Take items until a None (end marker); hand extra end markers back for the others."""
    q = ketch.Queue.from_name(queue_name)
    got: list[int] = []
    while True:
        batch = q.get_many(250, timeout=120)
        ends = sum(1 for x in batch if x is None)
        got.extend(x for x in batch if x is not None)
        if ends:
            if ends > 1:
                q.put_many([None] * (ends - 1))
            return {"pid": ident.me(), "items": got}


@app.function()
def wait_for_item(queue_name: str, timeout: float) -> dict[str, Any]:
    q = ketch.Queue.from_name(queue_name)
    q.put("waiting", partition="ready")
    started = time.monotonic()
    item = q.get(timeout=timeout)
    return {"item": item, "waited": time.monotonic() - started}


@app.function()
async def async_roundtrip(dict_name: str, queue_name: str) -> dict[str, Any]:
    """The .aio forms, from an async function in a container."""
    d = ketch.Dict.from_name(dict_name, create_if_missing=True)
    q = ketch.Queue.from_name(queue_name, create_if_missing=True)
    await d.put.aio("from-async", [1, 2, 3])
    await q.put_many.aio(["a", "b"])
    return {
        "value": await d.get.aio("from-async"),
        "contains": await d.contains.aio("from-async"),
        "len": await q.len.aio(),
        "items": [await q.get.aio(timeout=10), *(await q.get_many.aio(5, block=False))],
        "keys": [k async for k in d.keys.aio()],
    }


@app.function()
def take_from(q: ketch.Queue, d: ketch.Dict) -> Any:
    """Handles passed as arguments reach the same objects (ephemeral ones included)."""
    d["seen"] = q.get(timeout=30)
    return d["seen"]
