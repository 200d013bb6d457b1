#!/usr/bin/env python
"""Cold start of a FastAPI endpoint: the fork server against plain process starts and
Ray Serve's scale from zero, measured side by side in one run.

    .venv/bin/python bench/coldstart_bench.py [--samples 20] [--reps 4] [--no-ray]

What one sample is: the time from sending `GET /` to the endpoint's URL while it has no
container (its image built, its app deployed) until the whole response is in (a fresh HTTP
connection each time). The endpoint is `bench/bench_cold_web.py`: `@app.function(
scaledown_window=1) @ketch.fastapi_endpoint()` returning a small JSON object.

Systems:
  fork    a ketch server with the fork server on (the default): the container is forked
          from the function's template, which has imported the runtime, FastAPI/uvicorn
          and the module.
  plain   a ketch server with KETCH_FORK_SERVER=0: every container is a new interpreter.
  ray     Ray Serve: the same handler as a `@serve.ingress` FastAPI deployment with
          `min_replicas=0`, reached through Serve's HTTP proxy on 127.0.0.1, with the fast
          autoscaling settings of bench/core.py (no upscale delay, metrics every 0.5 s,
          1 s downscale delays).

How each returns to zero: ketch's own scale-down (scaledown_window=1, so the container goes
one to two seconds after its request; the bench waits until `GET /v1/status` lists no
container for the app, then --settle seconds); Ray Serve's autoscaler (the bench waits
until the deployment reports no replica, then --settle). No container is stopped by hand.

The two ketch servers (their own KETCH_HOME each, deployed with `ketch deploy`) run for the
whole bench, idle between their blocks. Ray is started for each of its blocks and shut down
after it, as in bench/core.py. Blocks alternate fork, plain, ray in each repetition, so that
load from elsewhere on the machine hits all three alike. The first request after each
deploy (for the fork server: template not started yet) is reported on its own line and not
counted in the samples. Results (every sample) go to bench/results/coldstart-*.json.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(BENCH))

from _common import (  # noqa: E402
    QUIET,
    fast_autoscaling,
    machine_line,
    save_result,
    serve_http,
    serve_replicas,
    wait_for_zero,
)
from core import _table, loadavg, log, machine_info, pct, spread  # noqa: E402

TARGET_MS = 150.0


class KetchServer:
    """A ketch server of its own (fresh KETCH_HOME) with the bench endpoint deployed."""

    def __init__(self, name: str, fork_server: bool) -> None:
        self.name = name
        self.home = Path(tempfile.mkdtemp(prefix=f"ketch-coldbench-{name}-"))
        self.env = {
            **os.environ,
            "KETCH_HOME": str(self.home),
            "KETCH_GATEWAY_PORT": "0",
            "KETCH_FORK_SERVER": "1" if fork_server else "0",
        }
        self.url = ""
        self.app_id = ""

    def cli(self, *args: str) -> str:
        proc = subprocess.run(
            [sys.executable, "-m", "ketch.cli", *args],
            env=self.env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=600,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"ketch {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
        return proc.stdout

    def api(self, path: str) -> Any:
        info = json.loads((self.home / "server.json").read_text())
        token = (self.home / "token").read_text().strip()
        resp = httpx.get(
            f"http://127.0.0.1:{info['api_port']}{path}",
            headers={"Authorization": f"Bearer {token}"},
            timeout=30,
        )
        resp.raise_for_status()
        return resp.json()

    def deploy(self) -> None:
        t0 = time.perf_counter()
        self.cli("deploy", str(BENCH / "bench_cold_web.py"))
        ep = next(e for e in self.api("/v1/endpoints") if e["function"] == "hello")
        self.url, self.app_id = ep["url"], ep["app_id"]
        log(f"ketch {self.name}: deployed in {time.perf_counter() - t0:.1f}s, {self.url}")

    def containers(self) -> list[dict[str, Any]]:
        return [
            c for c in self.api("/v1/status")["containers"].values() if c["app_id"] == self.app_id
        ]

    def wait_zero(self) -> None:
        wait_for_zero(lambda: len(self.containers()), f"ketch {self.name}")

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.cli("server", "stop")
        shutil.rmtree(self.home, ignore_errors=True)


def timed_get(url: str) -> float:
    """ms from sending the request on a new connection until the whole response is in."""
    with httpx.Client(timeout=120) as client:
        t = time.perf_counter()
        resp = client.get(url)
        dt = (time.perf_counter() - t) * 1e3
    if resp.status_code != 200 or resp.json() != {"hello": "world"}:
        raise AssertionError(f"{url}: {resp.status_code} {resp.text[:200]}")
    return dt


def ketch_block(k: KetchServer, n: int, settle: float) -> list[dict[str, Any]]:
    out = []
    for _ in range(n):
        k.wait_zero()
        time.sleep(settle)
        la = loadavg()
        ms = timed_get(k.url)
        out.append({"ms": ms, "loadavg": la})
        log(f"ketch {k.name:5s} {ms:7.1f} ms")
    return out


@contextlib.contextmanager
def ray_serve_app() -> Iterator[str]:
    """The endpoint's handler as a Ray Serve deployment that scales from zero; yields its
    URL."""
    import bench_cold_web
    from ray import serve

    with serve_http() as port:

        @serve.deployment(
            autoscaling_config=fast_autoscaling(max_replicas=1, target=1, downscale_s=1),
            graceful_shutdown_wait_loop_s=0.1,
            graceful_shutdown_timeout_s=1,
            logging_config=QUIET,
        )
        @serve.ingress(bench_cold_web.make_fastapi_app())
        class ColdWeb:
            pass

        serve.run(
            ColdWeb.bind(),
            name="bench-coldweb",  # type: ignore[attr-defined]
            route_prefix="/",
        )
        yield f"http://127.0.0.1:{port}/"


def ray_block(n: int, settle: float, first: list[float]) -> list[dict[str, Any]]:
    out = []
    with ray_serve_app() as url:
        for i in range(n + (0 if first else 1)):
            wait_for_zero(lambda: serve_replicas("bench-coldweb", "ColdWeb"), "Ray Serve")
            time.sleep(settle)
            la = loadavg()
            ms = timed_get(url)
            if not first and i == 0:
                first.append(ms)
                log(f"ray serve first request after deploy {ms:7.1f} ms (not a sample)")
                continue
            out.append({"ms": ms, "loadavg": la})
            log(f"ray serve   {ms:7.1f} ms")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--samples", type=int, default=20, help="samples per system")
    ap.add_argument("--reps", type=int, default=4, help="alternating blocks per system")
    ap.add_argument("--settle", type=float, default=0.3, help="seconds at zero before a sample")
    ap.add_argument("--no-ray", action="store_true", help="skip Ray Serve")
    args = ap.parse_args()

    info = machine_info()
    per_rep = max(1, math.ceil(args.samples / args.reps))
    servers = {"fork": KetchServer("fork", True), "plain": KetchServer("plain", False)}
    samples: dict[str, list[dict[str, Any]]] = {"fork": [], "plain": [], "ray": []}
    first: dict[str, float] = {}
    ray_first: list[float] = []
    ray_errors: list[str] = []  # a failed Ray start is tried again in the next repetition
    try:
        for name, k in servers.items():
            k.deploy()
            k.wait_zero()
            time.sleep(args.settle)
            first[name] = timed_get(k.url)
            log(f"ketch {name:5s} first request after deploy {first[name]:7.1f} ms (not a sample)")
        for rep in range(args.reps):
            log(f"repetition {rep + 1}/{args.reps}")
            for name, k in servers.items():
                samples[name] += ketch_block(k, per_rep, args.settle)
            if not args.no_ray:
                try:
                    samples["ray"] += ray_block(per_rep, args.settle, ray_first)
                except Exception as exc:  # reported, not hidden
                    ray_errors.append(repr(exc))
                    log(f"ray serve failed: {exc!r}")
    finally:
        for k in servers.values():
            k.close()
    info["loadavg_end"] = loadavg()

    summary = {
        s: {**spread([x["ms"] for x in xs]), "p90": pct([x["ms"] for x in xs], 90)}
        for s, xs in samples.items()
        if xs
    }
    fm = summary["fork"]["median"]
    labels = {
        "fork": "ketch, fork server",
        "plain": "ketch, plain process (fork server off)",
        "ray": "Ray Serve, scale from zero",
    }
    rows = [
        (labels[s], summary[s], summary[s]["p90"], fm / summary[s]["median"])
        for s in labels
        if s in summary
    ]
    n = len(samples["fork"])
    table = _table(
        f"FastAPI endpoint cold start, ms ({n} samples each, median [min-max])",
        ["", "ms", "p90", "fork/this"],
        rows,
    )
    firsts = ", ".join(f"{labels[s].split(',')[0]} {s} {ms:.0f}" for s, ms in first.items())
    if ray_first:
        firsts += f", Ray Serve {ray_first[0]:.0f}"
    table += f"\nfirst request after deploy (ms, not in the samples): {firsts}"
    if ray_errors:
        table += (
            f"\nRay Serve failed in {len(ray_errors)} of {args.reps} blocks "
            f"(first: {ray_errors[0]})"
        )
    met = fm <= TARGET_MS
    table += f"\ntarget fork-server median <= {TARGET_MS:.0f} ms: {'MET' if met else 'MISSED'}"
    print(machine_line(info))
    print(table)
    out = save_result(
        "coldstart",
        {
            "machine": info,
            "args": vars(args),
            "samples": samples,
            "first_after_deploy": {**first, "ray": ray_first},
            "summary": summary,
            "ray_errors": ray_errors,
            "target_met": met,
            "table": table,
        },
    )
    print(f"results: {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
