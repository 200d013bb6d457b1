#!/usr/bin/env python
"""The Ray backend against the local backend, side by side in one run (issue 14).

    .venv/bin/python bench/ray_backend.py [--rounds 3 --calls 500 --n 2000]

Starts a two-node Ray cluster on this machine (ray.cluster_utils, loopback addresses
127.0.0.2 and .3, one CPU each), then per round one fresh KETCH_HOME and server per
backend, the two taking turns (local, ray, local, ray, ...) so that load from elsewhere
hits both alike. In each: cold, `.remote()` on a function with no container until its
result (ms, the container's start included); warm, the p50 of --calls `.remote()` calls
(ms); map, `.map` of --n trivial inputs over two warm containers (inputs/s). Prints each
round and the ray/local ratio of the medians.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent

_CHILD = r"""
import json, os, sys, time
sys.path.insert(0, os.environ["BENCH_DIR"])
from ray_bench_app import app, echo, inc
calls, n = int(sys.argv[1]), int(sys.argv[2])
with app.run(show_logs=False):
    t0 = time.perf_counter()
    echo.remote(0)
    cold = time.perf_counter() - t0
    for i in range(100):
        echo.remote(i)
    lat = []
    for i in range(calls):
        t0 = time.perf_counter()
        echo.remote(i)
        lat.append(time.perf_counter() - t0)
    lat.sort()
    list(inc.map(range(200)))  # both containers warm
    t0 = time.perf_counter()
    out = list(inc.map(range(n)))
    rate = n / (time.perf_counter() - t0)
    assert out == list(range(1, n + 1))
print(json.dumps({"cold_ms": cold * 1e3, "warm_p50_ms": lat[len(lat) // 2] * 1e3,
                  "map_per_s": rate}))
"""

_RAY_ENV = {"RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}


def _side(backend: str, address: str, calls: int, n: int) -> dict[str, float]:
    home = Path(tempfile.mkdtemp(prefix=f"ketch-bench-{backend}-"))
    env = {**os.environ, **_RAY_ENV, "KETCH_HOME": str(home), "KETCH_GATEWAY_PORT": "0"}
    env["BENCH_DIR"] = str(BENCH)
    env["KETCH_BACKEND"] = backend
    if backend == "ray":
        env["KETCH_RAY_ADDRESS"] = address
    try:
        out = subprocess.run(
            [sys.executable, "-c", _CHILD, str(calls), str(n)],
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        if out.returncode != 0:
            raise SystemExit(f"{backend} side failed:\n{out.stdout}\n{out.stderr}")
        result: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
        return result
    finally:
        subprocess.run(
            [sys.executable, "-m", "ketch.cli", "server", "stop"], env=env, capture_output=True
        )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--calls", type=int, default=500)
    parser.add_argument("--n", type=int, default=2000)
    args = parser.parse_args()
    os.environ.update(_RAY_ENV)
    from ray.cluster_utils import Cluster

    node = {"num_cpus": 1, "object_store_memory": 100 * 2**20}
    cluster = Cluster(
        initialize_head=True,
        head_node_args={**node, "node_ip_address": "127.0.0.2", "include_dashboard": False},
    )
    results: dict[str, list[dict[str, float]]] = {"local": [], "ray": []}
    try:
        cluster.add_node(**node, node_ip_address="127.0.0.3")
        cluster.wait_for_nodes()
        for r in range(args.rounds):
            for backend in ("local", "ray"):
                got = _side(backend, cluster.address, args.calls, args.n)
                results[backend].append(got)
                print(f"round {r + 1} {backend:5}: {json.dumps(got)}", flush=True)
    finally:
        cluster.shutdown()
    for key, better in (("cold_ms", "lower"), ("warm_p50_ms", "lower"), ("map_per_s", "higher")):
        local = statistics.median(x[key] for x in results["local"])
        ray = statistics.median(x[key] for x in results["ray"])
        print(
            f"{key:12} local {local:9.2f}  ray {ray:9.2f}  ray/local {ray / local:.2f} "
            f"({better} is better)"
        )


if __name__ == "__main__":
    main()
