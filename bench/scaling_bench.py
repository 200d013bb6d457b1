#!/usr/bin/env python
"""Scaling: a burst against an endpoint scaled to zero (ketch and Ray Serve in one run), and
what idle endpoints and idle warm containers cost.

    .venv/bin/python bench/scaling_bench.py [--requests 1000] [--concurrency 100] [--no-ray]

Burst (per system): an async handler (10 ms asyncio.sleep) scaled to zero, 10 requests per
container/replica at once; `--requests` GETs at `--concurrency` from one aiohttp session
(the same client code for both), latency per request from send to full body. Then the
same burst again while warm, and 5 s of wrk at the same concurrency. Reported: p50/p99
of the cold burst and of the warm one, errors (any non-200 or exception), and the peak
number of containers (ketch: sampled every 50 ms from the server's status; Ray Serve:
replicas from serve.status()).
  ketch: `@app.function(scaledown_window=2) @ketch.concurrent(max_inputs=10)
         @ketch.fastapi_endpoint()`, no max_containers; rate limit raised for the run.
  Ray Serve: `@serve.ingress` of a FastAPI app with the same handler, autoscaling
         min_replicas=0, max_replicas=10, target_ongoing_requests=10,
         max_ongoing_requests=10, upscale_delay_s=0, metrics_interval_s=0.5; HTTP proxy on
         127.0.0.1.

Idle cost (ketch only): the server's RSS on a fresh state directory, then after deploying
one app with 200 web endpoints (never called, so no container), and the RSS and PSS of
each of 4 idle warm containers (`min_containers=4`) of a FastAPI endpoint.

Writes every figure as JSON to bench/results/.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

from _common import (  # noqa: E402
    QUIET,
    fast_autoscaling,
    parse_wrk,
    save_result,
    serve_http,
    serve_replicas,
)
from core import Ketch, log, machine_info, pct  # noqa: E402


def _rss_kib(pid: int, field: str = "VmRSS") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def _pss_kib(pid: int) -> int:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    return 0


def _tree_pids(root: int) -> list[int]:
    """root and its descendants."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


async def _burst(url: str, n: int, conc: int, sample: Any) -> dict[str, Any]:
    # aiohttp rather than httpx: at 100 connections httpx's pool costs ~8 ms of client CPU
    # per request here, which would make the client, not the servers, the bottleneck.
    import aiohttp

    lat: list[float] = []
    errors: list[str] = []
    peak = 0
    done = asyncio.Event()

    async def sampler() -> None:
        nonlocal peak
        while not done.is_set():
            with contextlib.suppress(Exception):
                peak = max(peak, await asyncio.to_thread(sample))
            await asyncio.sleep(0.05)

    gate = asyncio.Semaphore(conc)
    connector = aiohttp.TCPConnector(limit=conc)
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as client:

        async def one() -> None:
            async with gate:
                t = time.perf_counter()
                try:
                    async with client.get(url) as r:
                        await r.read()
                        if r.status != 200:
                            errors.append(str(r.status))
                except Exception as exc:
                    errors.append(type(exc).__name__)
                lat.append(time.perf_counter() - t)

        task = asyncio.ensure_future(sampler())
        t0 = time.perf_counter()
        await asyncio.gather(*(one() for _ in range(n)))
        wall = time.perf_counter() - t0
        done.set()
        await task
    return {
        "p50_ms": pct(lat, 50) * 1e3,
        "p99_ms": pct(lat, 99) * 1e3,
        "max_ms": max(lat) * 1e3,
        "wall_s": wall,
        "errors": len(errors),
        "error_kinds": sorted(set(errors)),
        "peak_containers": peak,
    }


def wrk_warm(url: str, conc: int, seconds: int) -> dict[str, Any]:
    """Warm latency from wrk (C, one thread): what the server side costs, with far less
    client overhead than a Python client adds on a small machine."""
    import shutil
    import subprocess

    if shutil.which("wrk") is None:
        return {"skipped": "wrk is not installed"}
    out = subprocess.run(
        ["wrk", "-t1", f"-c{conc}", f"-d{seconds}s", "--latency", url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    w = parse_wrk(out)
    return {
        "p50_ms": w["p50_us"] / 1e3,
        "p99_ms": w["p99_us"] / 1e3,
        "rps": w["rps"],
        "non_2xx": w["non_2xx"],
        "socket_errors": w["socket_errors"],
    }


def _loads(who: str, url: str, args: argparse.Namespace, count: Any) -> dict[str, Any]:
    """The burst from zero, the same burst warm, then wrk while warm."""
    cold = asyncio.run(_burst(url, args.requests, args.concurrency, count))
    log(f"{who} cold burst: {cold}")
    warm = asyncio.run(_burst(url, args.requests, args.concurrency, count))
    log(f"{who} warm burst: {warm}")
    warm_wrk = wrk_warm(url, args.concurrency, 5)
    log(f"{who} warm wrk: {warm_wrk}")
    return {"cold": cold, "warm": warm, "warm_wrk": warm_wrk}


def ketch_burst(args: argparse.Namespace) -> dict[str, Any]:
    import bench_scaling_app as apps
    import httpx

    from ketch._client.discovery import read_server
    from ketch.config import Config

    os.environ["KETCH_RATE_LIMIT"] = "1000000"
    os.environ["KETCH_RATE_BURST"] = "1000000"
    k = Ketch()
    try:
        with apps.burst_app.run(show_logs=False):
            url = apps.burst.get_web_url()
            assert url is not None
            info = read_server(Config.load())
            assert info is not None
            headers = {"Authorization": f"Bearer {info.token}"}

            def containers() -> int:
                out = httpx.get(
                    f"{info.api_url}/v1/status/functions", headers=headers, timeout=10
                ).json()["functions"]
                return sum(
                    sum(f["containers"].values()) for f in out.values() if f["function"] == "burst"
                )

            assert containers() == 0
            result = _loads("ketch", url, args, containers)
            t0 = time.monotonic()
            while containers() and time.monotonic() - t0 < 120:
                time.sleep(0.2)
            result["back_to_zero_s"] = time.monotonic() - t0
    finally:
        k.close()
    return result


def ray_burst(args: argparse.Namespace) -> dict[str, Any]:
    import bench_scaling_app as apps
    from ray import serve

    with serve_http() as port:

        @serve.deployment(
            autoscaling_config=fast_autoscaling(max_replicas=10, target=10, downscale_s=2),
            max_ongoing_requests=10,
            logging_config=QUIET,
        )
        @serve.ingress(apps.make_fastapi_app())
        class Burst:
            pass

        serve.run(Burst.bind(), name="bench-burst", route_prefix="/")  # type: ignore[attr-defined]

        def replicas() -> int:
            return serve_replicas("bench-burst", "Burst")

        t0 = time.monotonic()
        while replicas() and time.monotonic() - t0 < 60:
            time.sleep(0.1)
        return _loads("ray", f"http://127.0.0.1:{port}/", args, replicas)


def idle_cost() -> dict[str, Any]:
    import bench_scaling_app as apps

    from ketch._client.discovery import read_server
    from ketch.config import Config

    k = Ketch()
    try:
        from ketch._client.discovery import ensure_server

        ensure_server(Config.load())
        info = read_server(Config.load())
        assert info is not None
        time.sleep(1.0)
        base = _rss_kib(info.pid)
        t0 = time.perf_counter()
        apps.idle_app.deploy()
        deploy_s = time.perf_counter() - t0
        time.sleep(2.0)
        with_200 = _rss_kib(info.pid)
        log(
            f"server RSS {base} KiB fresh, {with_200} KiB with 200 endpoints "
            f"(deployed in {deploy_s:.1f}s)"
        )
        with apps.warm_app.run(show_logs=False):
            app_id = apps.warm_app.app_id
            assert app_id is not None
            k.wait_ready(app_id, apps.WARM_CONTAINERS)
            time.sleep(2.0)
            rows = []
            for c in k.containers(app_id):
                pids = [p for p in _tree_pids(int(c.get("pid") or 0)) if p] if c.get("pid") else []
                rows.append(
                    {
                        "rss_kib": sum(_rss_kib(p) for p in pids),
                        "pss_kib": sum(_pss_kib(p) for p in pids),
                        "processes": len(pids),
                    }
                )
            if not any(r["processes"] for r in rows):
                rows = _containers_by_env(k.home)
        log(f"idle warm containers: {rows}")
        return {
            "server_rss_fresh_kib": base,
            "server_rss_200_endpoints_kib": with_200,
            "deploy_200_s": deploy_s,
            "warm_containers": rows,
        }
    finally:
        k.close()


def _containers_by_env(home: Path) -> list[dict[str, Any]]:
    """Container processes of this state directory (when the status has no pid)."""
    rows = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            cmd = (entry / "cmdline").read_bytes()
            env = (entry / "environ").read_bytes()
            if b"ketch._runtime" in cmd and str(home).encode() in env:
                pid = int(entry.name)
                rows.append({"rss_kib": _rss_kib(pid), "pss_kib": _pss_kib(pid), "processes": 1})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--no-ray", action="store_true")
    args = parser.parse_args()
    info = machine_info()
    result: dict[str, Any] = {"machine": info, "args": vars(args)}
    result["ketch"] = ketch_burst(args)
    if not args.no_ray:
        result["ray"] = ray_burst(args)
    result["idle"] = idle_cost()
    out = save_result("scaling", result)
    print(json.dumps({k: v for k, v in result.items() if k != "machine"}, indent=2))
    kc, kw = result["ketch"]["cold"], result["ketch"]["warm"]
    print(
        f"\nketch: cold p50 {kc['p50_ms']:.0f} ms p99 {kc['p99_ms']:.0f} ms, warm p50 "
        f"{kw['p50_ms']:.0f} ms p99 {kw['p99_ms']:.0f} ms (p99/p50 warm "
        f"{kw['p99_ms'] / kw['p50_ms']:.2f}), errors {kc['errors'] + kw['errors']}, peak "
        f"containers {max(kc['peak_containers'], kw['peak_containers'])}"
    )
    if "ray" in result:
        rc, rw = result["ray"]["cold"], result["ray"]["warm"]
        print(
            f"ray serve: cold p50 {rc['p50_ms']:.0f} ms p99 {rc['p99_ms']:.0f} ms, warm "
            f"p50 {rw['p50_ms']:.0f} ms p99 {rw['p99_ms']:.0f} ms, errors "
            f"{rc['errors'] + rw['errors']}, peak replicas "
            f"{max(rc['peak_containers'], rw['peak_containers'])}"
        )
        print(
            f"ketch/ray cold p99 {kc['p99_ms'] / rc['p99_ms']:.2f}, warm p99 "
            f"{kw['p99_ms'] / rw['p99_ms']:.2f}"
        )
    for name in ("ketch", "ray"):
        w = result.get(name, {}).get("warm_wrk", {})
        if "p50_ms" in w:
            print(
                f"{name} warm (wrk -c{args.concurrency} 5 s): p50 {w['p50_ms']:.1f} ms p99 "
                f"{w['p99_ms']:.1f} ms ({w['p99_ms'] / w['p50_ms']:.2f} x p50), "
                f"{w['rps']:.0f} req/s, non-2xx {w['non_2xx']}"
            )
    print(f"loadavg at start {info['loadavg_start']}")
    print(f"results: {out}")


if __name__ == "__main__":
    main()
