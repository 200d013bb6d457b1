#!/usr/bin/env python
"""Dict and Queue throughput of ketch, side by side with Ray in one run.

    .venv/bin/python bench/objects_bench.py [--rounds 3] [--pairs 2000] [--items 20000]

Measures, alternating ketch and Ray rounds:
  1. Dict put+get round trips per second from one client (sequential), against a Ray actor
     that holds a Python dict (`ray.get(kv.put.remote(k, v))`, then `get`).
  2. The same from 8 containers at once (8 Ray tasks against the one actor), started
     together; throughput = all pairs / (last finish - first start).
  3. Queue items per second from a producer function to a consumer function, one item per
     call (`put`/`get`) and in batches of 100 (`put_many`/`get_many`), against
     `ray.util.queue.Queue` (an actor) with `put`/`get` and `put_nowait_batch`/
     `get_nowait_batch` (Ray has no blocking batch get: its consumer retries on Empty).

Prints a table with ratios and writes the raw rounds to bench/results/objects-*.json.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

from _common import machine_line, save_result  # noqa: E402
from core import (  # noqa: E402
    ROOT,
    _table,
    ketch_app,
    loadavg,
    log,
    machine_info,
    ray_session,
)


def _rate(n: int, seconds: float) -> float:
    return n / seconds if seconds > 0 else float("nan")


# -- ketch --------------------------------------------------------------------------------
def ketch_dict_one(pairs: int) -> float:
    import ketch

    d = ketch.Dict.from_name(f"bench-one-{uuid.uuid4().hex[:8]}", create_if_missing=True)
    for i in range(200):  # warm-up
        d.put(i % 64, i)
        d.get(i % 64)
    t0 = time.perf_counter()
    for i in range(pairs):
        d.put(i % 64, i)
        d.get(i % 64)
    rate = _rate(pairs, time.perf_counter() - t0)
    ketch.Dict.delete(d.name or "")
    return rate


def ketch_dict_eight(pairs: int) -> float:
    from objects_app import dict_worker

    import ketch

    name, gate_name = f"bench-8-{uuid.uuid4().hex[:8]}", f"gate-{uuid.uuid4().hex[:8]}"
    ketch.Dict.from_name(name, create_if_missing=True).hydrate()
    gate = ketch.Queue.from_name(gate_name, create_if_missing=True).hydrate()
    calls = [dict_worker.spawn(name, gate_name, pairs) for _ in range(8)]
    arrived = 0
    while arrived < 8:
        arrived += len(gate.get_many(8, timeout=120, partition="arrived"))
    gate.put_many(["go"] * 8, partition="go")
    out = [c.get(timeout=600) for c in calls]
    rate = _rate(8 * pairs, max(o["end"] for o in out) - min(o["start"] for o in out))
    ketch.Dict.delete(name)
    ketch.Queue.delete(gate_name)
    return rate


def ketch_queue(items: int, batch: int) -> float:
    from objects_app import queue_consumer, queue_producer

    import ketch

    name = f"bench-q-{uuid.uuid4().hex[:8]}"
    ketch.Queue.from_name(name, create_if_missing=True).hydrate()
    consumer = queue_consumer.spawn(name, items, batch)
    t0 = time.time()
    producer = queue_producer.spawn(name, items, batch)
    out = consumer.get(timeout=600)
    producer.get(timeout=60)
    ketch.Queue.delete(name)
    return _rate(items, out["end"] - t0)


# -- Ray ----------------------------------------------------------------------------------
def _ray_defs() -> dict[str, Any]:
    import ray

    @ray.remote
    class KV:
        def __init__(self) -> None:
            self.d: dict[Any, Any] = {}

        def put(self, k: Any, v: Any) -> bool:
            self.d[k] = v
            return True

        def get(self, k: Any) -> Any:
            return self.d.get(k)

    @ray.remote(num_cpus=0.25)
    def worker(kv: Any, me: int, pairs: int) -> dict[str, float]:
        start = time.time()
        for i in range(pairs):
            ray.get(kv.put.remote((me, i % 64), i))
            ray.get(kv.get.remote((me, i % 64)))
        return {"start": start, "end": time.time()}

    @ray.remote(num_cpus=0.25)
    def producer(q: Any, n: int, batch: int) -> float:
        if batch == 1:
            for i in range(n):
                q.put(i)
        else:
            for s in range(0, n, batch):
                q.put_nowait_batch(list(range(s, min(n, s + batch))))
        return time.time()

    @ray.remote(num_cpus=0.25)
    def consumer(q: Any, n: int, batch: int) -> float:
        from ray.util.queue import Empty

        got = 0
        while got < n:
            if batch == 1:
                q.get(block=True, timeout=120)
                got += 1
            else:
                size = min(batch, q.size())
                if size == 0:
                    time.sleep(0.001)
                    continue
                try:
                    got += len(q.get_nowait_batch(size))
                except Empty:
                    continue
        return time.time()

    return {"KV": KV, "worker": worker, "producer": producer, "consumer": consumer}


def ray_round(args: argparse.Namespace) -> dict[str, float]:
    out: dict[str, float] = {}
    with ray_session() as ray:
        from ray.util.queue import Queue

        defs = _ray_defs()
        kv = defs["KV"].remote()
        for i in range(200):
            ray.get(kv.put.remote(i % 64, i))
            ray.get(kv.get.remote(i % 64))
        t0 = time.perf_counter()
        for i in range(args.pairs):
            ray.get(kv.put.remote(i % 64, i))
            ray.get(kv.get.remote(i % 64))
        out["dict_one"] = _rate(args.pairs, time.perf_counter() - t0)
        ray.get(defs["worker"].remote(kv, 99, 10))  # a worker process is up
        res = ray.get([defs["worker"].remote(kv, me, args.pairs) for me in range(8)])
        out["dict_eight"] = _rate(
            8 * args.pairs, max(r["end"] for r in res) - min(r["start"] for r in res)
        )
        for batch, key in ((1, "queue_single"), (100, "queue_batch")):
            n = args.items if batch > 1 else args.items // 4
            q = Queue()
            c = defs["consumer"].remote(q, n, batch)
            t0w = time.time()
            p = defs["producer"].remote(q, n, batch)
            end = ray.get(c)
            ray.get(p)
            out[key] = _rate(n, end - t0w)
            q.shutdown()
    return out


def ketch_round(args: argparse.Namespace) -> dict[str, float]:
    return {
        "dict_one": ketch_dict_one(args.pairs),
        "dict_eight": ketch_dict_eight(args.pairs),
        "queue_single": ketch_queue(args.items // 4, 1),
        "queue_batch": ketch_queue(args.items, 100),
    }


LABELS = {
    "dict_one": "Dict put+get pairs/s, 1 client",
    "dict_eight": "Dict put+get pairs/s, 8 containers",
    "queue_single": "Queue items/s, put/get one at a time",
    "queue_batch": "Queue items/s, batches of 100",
}


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--pairs", type=int, default=2000, help="put+get pairs per client")
    ap.add_argument(
        "--items",
        type=int,
        default=20_000,
        help="queue items in batches (a quarter of it one at a time)",
    )
    ap.add_argument("--keep-home", action="store_true")
    args = ap.parse_args()
    import objects_app

    info = machine_info()
    rounds: dict[str, list[dict[str, float]]] = {"ketch": [], "ray": []}
    with ketch_app(objects_app.app, args.keep_home) as k:
        k.wait_ready(objects_app.app.app_id, 10)
        for r in range(args.rounds):
            la = loadavg()
            rounds["ketch"].append({**ketch_round(args), "loadavg": la})
            log(f"round {r + 1} ketch: {rounds['ketch'][-1]}")
            la = loadavg()
            rounds["ray"].append({**ray_round(args), "loadavg": la})
            log(f"round {r + 1} ray:   {rounds['ray'][-1]}")
    info["loadavg_end"] = loadavg()
    rows = []
    summary: dict[str, Any] = {}
    for key, label in LABELS.items():
        kv = [x[key] for x in rounds["ketch"]]
        rv = [x[key] for x in rounds["ray"]]
        km, rm = statistics.median(kv), statistics.median(rv)
        summary[key] = {"ketch": km, "ray": rm, "ratio": km / rm}
        rows.append(
            (
                label,
                f"{km:,.0f} [{min(kv):,.0f}-{max(kv):,.0f}]",
                f"{rm:,.0f} [{min(rv):,.0f}-{max(rv):,.0f}]",
                f"{km / rm:.2f}",
            )
        )
    table = _table(
        f"Dict and Queue, {args.rounds} alternating rounds (median [min-max])",
        ["", "ketch", "Ray", "ketch/Ray"],
        rows,
    )
    print()
    print(machine_line(info))
    print(table)
    path = save_result(
        "objects",
        {
            "command": " ".join(sys.argv),
            "args": vars(args),
            "machine": info,
            "rounds": rounds,
            "summary": summary,
        },
    )
    print(f"\nfull result: {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
