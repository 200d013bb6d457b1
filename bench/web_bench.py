#!/usr/bin/env python
"""Web: one hello-world FastAPI handler served three ways, measured side by side in one run.

    .venv/bin/python bench/web_bench.py [--rounds 3] [--duration 5] [--concurrency 1,32]
                                        [--sse-events 200] [--sse-interval-ms 10]

Systems (the handlers are the same functions, bench/bench_web_app.py):
  ketch   a real ketch endpoint: `@app.function(min_containers=1, max_containers=1)
          @ketch.concurrent(max_inputs=100) @ketch.fastapi_endpoint()`, deployed with
          `app.run()`, warm, reached at `fn.get_web_url()` through ketch's gateway (in the
          server process), which forwards to uvicorn in the container over a unix socket.
  uvicorn the same handlers as routes of one FastAPI app, in one uvicorn process on TCP
          127.0.0.1 (uvloop + httptools, no access log, like the container's uvicorn).
  ray     Ray Serve: a deployment with `@serve.ingress` of that FastAPI app, num_replicas=1,
          max_ongoing_requests=1000, access log off, its HTTP proxy on 127.0.0.1.

Load: wrk (one thread, keep-alive) at each concurrency, --duration seconds after a 1 s
warm-up, per system per round. SSE: one stream per system per round of --sse-events events,
--sse-interval-ms apart; each event carries the handler's time.time() at the yield, and the
client records time.time() at arrival minus that (same machine, same clock).

Fairness (as bench/core.py): rounds alternate ketch, uvicorn, Ray; Ray is started for its turn
and shut down after it (`ray.init(num_cpus=<nproc>)`, no dashboard, RAY_AUTH_MODE=disabled),
so its background processes never compete with the others; ketch's server and the bare
uvicorn stay up, idle, between their turns. Fresh KETCH_HOME; the SDK client is closed before
the server is stopped. Prints a table (median [min-max] of the rounds) with the ratios and
writes every round as JSON to bench/results/.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(BENCH))

from _common import (  # noqa: E402
    QUIET,
    free_port,
    machine_line,
    parse_wrk,
    save_result,
    serve_http,
)
from core import (  # noqa: E402
    _table,
    ketch_app,
    loadavg,
    log,
    machine_info,
    pct,
    spread,
)

SYSTEMS = ("ketch", "uvicorn", "ray")


# -- helpers ---------------------------------------------------------------------------------
def _cpu_seconds(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        with contextlib.suppress(OSError, IndexError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def _pids_matching(*needles: bytes, marker: bytes | None = None) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            env = (entry / "environ").read_bytes() if marker else b""
        except OSError:
            continue
        if any(n in cmdline for n in needles) and (marker is None or marker in cmdline + env):
            out.append(int(entry.name))
    return out


class Target:
    """Where a load generator connects (always 127.0.0.1:port) and the Host it sends."""

    def __init__(self, url: str, path: str = "/") -> None:
        parts = urlsplit(url)
        assert parts.port is not None, url
        self.port = parts.port
        self.host = parts.netloc
        self.path = path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{self.path}"


def wrk(target: Target, concurrency: int, duration: float, warmup: float) -> dict[str, Any]:
    base = ["wrk", "-t1", f"-c{concurrency}", "-H", f"Host: {target.host}"]
    if warmup:
        subprocess.run(
            [*base, f"-d{max(1, round(warmup))}s", target.url], capture_output=True, check=True
        )
    la = loadavg()
    out = subprocess.run(
        [*base, f"-d{round(duration)}s", "--latency", target.url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    w = parse_wrk(out)
    if w["non_2xx"]:
        raise AssertionError(f"{target.url} ({target.host}): non-2xx responses\n{out}")
    return {
        "rps": w["rps"],
        "p50_us": w["p50_us"],
        "p90_us": w["p90_us"],
        "p99_us": w["p99_us"],
        "socket_errors": w["socket_errors"],
        "loadavg": la,
    }


def sse_delays(target: Target, n: int, interval_ms: float) -> dict[str, Any]:
    """One SSE stream; per event, client arrival time.time() minus the handler's stamp."""
    import httpx

    delays = []
    url = f"{target.url}?n={n}&interval_ms={interval_ms:g}"
    with (
        httpx.Client(timeout=60) as client,
        client.stream("GET", url, headers={"Host": target.host}) as resp,
    ):
        resp.raise_for_status()
        for line in resp.iter_lines():
            if line.startswith("data: "):
                delays.append((time.time() - float(line[6:])) * 1e3)
    if len(delays) != n:
        raise AssertionError(f"SSE {target.url}: {len(delays)} events, expected {n}")
    return {
        "n": n,
        "p50_ms": pct(delays, 50),
        "p99_ms": pct(delays, 99),
        "max_ms": max(delays),
        "min_ms": min(delays),
        "delays_ms": delays,
    }


def warm(target: Target, timeout: float = 60) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while True:
        try:
            r = httpx.get(target.url, headers={"Host": target.host}, timeout=10)
            if r.status_code == 200 and r.json() == {"hello": "world"}:
                return
            err = f"{r.status_code} {r.text[:200]}"
        except (httpx.HTTPError, ValueError) as exc:
            err = repr(exc)
        if time.monotonic() > deadline:
            raise TimeoutError(f"{target.url} ({target.host}) not serving: {err}")
        time.sleep(0.1)


# -- the systems -----------------------------------------------------------------------------
@contextlib.contextmanager
def bare_uvicorn() -> Iterator[tuple[Target, Target, list[int]]]:
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "bench_web_app:fastapi_app",
            "--app-dir",
            str(BENCH),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--loop",
            "uvloop",
            "--http",
            "httptools",
            "--no-access-log",
            "--log-level",
            "warning",
            "--lifespan",
            "off",
        ],
    )
    try:
        url = f"http://127.0.0.1:{port}"
        hello = Target(url)
        warm(hello)
        sse_delays(Target(url, "/sse"), 5, 1.0)
        yield hello, Target(url, "/sse"), [proc.pid]
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextlib.contextmanager
def ray_serve() -> Iterator[tuple[Target, Target, list[int]]]:
    import bench_web_app
    from ray import serve

    t0 = time.perf_counter()
    with serve_http() as port:

        @serve.deployment(num_replicas=1, max_ongoing_requests=1000, logging_config=QUIET)
        @serve.ingress(bench_web_app.make_fastapi_app())
        class BenchWeb:
            pass

        serve.run(
            BenchWeb.bind(),  # type: ignore[attr-defined]
            name="bench-web",
            route_prefix="/",
        )
        url = f"http://127.0.0.1:{port}"
        hello = Target(url)
        warm(hello)
        sse_delays(Target(url, "/sse"), 5, 1.0)
        time.sleep(1.0)  # let Ray's start-up work settle
        log(f"ray serve: up in {time.perf_counter() - t0:.1f}s")
        pids = _pids_matching(b"ray::", b"/raylet", b"gcs_server")
        yield hello, Target(url, "/sse"), pids


# -- the run ---------------------------------------------------------------------------------
def measure(
    name: str,
    hello: Target,
    sse: Target,
    pids: list[int],
    args: argparse.Namespace,
    levels: list[int],
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for c in levels:
        cpu0 = _cpu_seconds(pids)
        r = wrk(hello, c, args.duration, args.warmup)
        n = r["rps"] * (args.duration + args.warmup)  # warm-up requests count too
        r["server_cpu_us_per_req"] = (_cpu_seconds(pids) - cpu0) / n * 1e6 if n else None
        out[f"c{c}"] = r
        log(
            f"{name:8s} c={c:<3d} {r['rps']:8.0f} req/s  p50 {r['p50_us']:6.0f} us  "
            f"p99 {r['p99_us']:6.0f} us  server cpu {r['server_cpu_us_per_req']:.0f} us/req"
        )
    s = sse_delays(sse, args.sse_events, args.sse_interval_ms)
    out["sse"] = s
    log(
        f"{name:8s} SSE delay p50 {s['p50_ms']:.2f} ms  p99 {s['p99_ms']:.2f} ms  "
        f"max {s['max_ms']:.2f} ms"
    )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=float, default=5.0, help="seconds per load point")
    ap.add_argument("--warmup", type=float, default=1.0, help="seconds of warm-up per point")
    ap.add_argument("--concurrency", default="1,32")
    ap.add_argument("--sse-events", type=int, default=200)
    ap.add_argument("--sse-interval-ms", type=float, default=10.0)
    ap.add_argument("--keep-home", action="store_true")
    args = ap.parse_args()
    if not shutil.which("wrk"):
        sys.exit("wrk is needed: apt-get install -y wrk")
    levels = [int(c) for c in args.concurrency.split(",")]

    import bench_web_app

    info = machine_info()
    info["wrk"] = (
        subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout.split("\n")[0].strip()
    )
    rounds: dict[str, list[dict[str, Any]]] = {s: [] for s in SYSTEMS}
    # A gateway port of its own (the default 8000 is Ray Serve's default, and other ketch
    # servers on this machine may hold it).
    os.environ["KETCH_GATEWAY_PORT"] = str(free_port())
    # The gateway limits each workspace to 200 req/s (burst 1000) by default: a load test
    # would measure the limiter's 429s. Lifted here (the bucket is still checked per request).
    os.environ["KETCH_RATE_LIMIT"] = "1e9"
    os.environ["KETCH_RATE_BURST"] = str(10**9)
    with ketch_app(bench_web_app.web_app, args.keep_home) as k, bare_uvicorn() as bare:
        from ketch._client.discovery import read_server
        from ketch.config import Config

        k.wait_ready(str(bench_web_app.web_app.app_id), 2)
        k_hello = Target(str(bench_web_app.hello.get_web_url()))
        k_sse = Target(str(bench_web_app.sse.get_web_url()))
        log(f"ketch: hello at {bench_web_app.hello.get_web_url()}")
        warm(k_hello)
        sse_delays(k_sse, 5, 1.0)  # the SSE container answers too
        server = read_server(Config.load())
        assert server is not None and server.pid is not None
        k_pids = [server.pid, *_pids_matching(b"ketch._runtime", marker=str(k.home).encode())]
        log(f"ketch: server pid {server.pid}, container pids {k_pids[1:]}")
        for r in range(args.rounds):
            log(f"== round {r + 1}/{args.rounds}")
            rounds["ketch"].append(measure("ketch", k_hello, k_sse, k_pids, args, levels))
            rounds["uvicorn"].append(measure("uvicorn", *bare, args, levels))
            with ray_serve() as ray_targets:
                rounds["ray"].append(measure("ray", *ray_targets, args, levels))
    info["loadavg_end"] = loadavg()

    # -- summary
    summary: dict[str, Any] = {}
    for s in SYSTEMS:
        summary[s] = {}
        for c in levels:
            key = f"c{c}"
            summary[s][key] = {
                m: spread([x[key][m] for x in rounds[s]])
                for m in ("rps", "p50_us", "p99_us", "server_cpu_us_per_req")
            }
        all_delays = [d for x in rounds[s] for d in x["sse"]["delays_ms"]]
        summary[s]["sse"] = {
            "p50_ms": spread([x["sse"]["p50_ms"] for x in rounds[s]]),
            "p99_ms": spread([x["sse"]["p99_ms"] for x in rounds[s]]),
            "pooled_p50_ms": pct(all_delays, 50),
            "pooled_p99_ms": pct(all_delays, 99),
        }
    per_round: dict[str, Any] = {}
    for c in levels:
        key = f"c{c}"
        per_round[key] = {
            "ketch/uvicorn rps": [
                rounds["ketch"][i][key]["rps"] / rounds["uvicorn"][i][key]["rps"]
                for i in range(args.rounds)
            ],
            "ketch/ray rps": [
                rounds["ketch"][i][key]["rps"] / rounds["ray"][i][key]["rps"]
                for i in range(args.rounds)
            ],
            "p50 added us": [
                rounds["ketch"][i][key]["p50_us"] - rounds["uvicorn"][i][key]["p50_us"]
                for i in range(args.rounds)
            ],
        }
    med = {
        s: {
            c: {m: summary[s][f"c{c}"][m]["median"] for m in ("rps", "p50_us", "p99_us")}
            for c in levels
        }
        for s in SYSTEMS
    }
    ratios = {
        f"c{c}": {
            "ketch/uvicorn rps": med["ketch"][c]["rps"] / med["uvicorn"][c]["rps"],
            "ketch/ray rps": med["ketch"][c]["rps"] / med["ray"][c]["rps"],
            "p50 added us (ketch - uvicorn)": med["ketch"][c]["p50_us"]
            - med["uvicorn"][c]["p50_us"],
        }
        for c in levels
    }

    rows: list[tuple[Any, ...]] = []
    labels = {
        "ketch": "ketch endpoint (gateway)",
        "uvicorn": "bare uvicorn (TCP)",
        "ray": "Ray Serve",
    }
    for c in levels:
        for s in SYSTEMS:
            m = summary[s][f"c{c}"]
            rows.append(
                (
                    f"c={c} {labels[s]}",
                    m["rps"],
                    m["p50_us"],
                    m["p99_us"],
                    m["server_cpu_us_per_req"],
                    None if s == "ketch" else med["ketch"][c]["rps"] / med[s][c]["rps"],
                )
            )
    table = _table(
        f"hello world, wrk -t1, {args.duration:g} s per point, {args.rounds} rounds "
        "(median [min-max] of the rounds)",
        ["", "req/s", "p50 µs", "p99 µs", "server CPU µs/req", "ketch/this req/s"],
        rows,
    )
    sse_rows = [
        (
            labels[s],
            summary[s]["sse"]["p50_ms"],
            summary[s]["sse"]["p99_ms"],
            f"{summary[s]['sse']['pooled_p50_ms']:.2f} / {summary[s]['sse']['pooled_p99_ms']:.2f}",
        )
        for s in SYSTEMS
    ]
    table += "\n\n" + _table(
        f"SSE: handler yield -> client arrival, {args.sse_events} events "
        f"{args.sse_interval_ms:g} ms apart, 1 stream per round (ms, median [min-max] of rounds)",
        ["", "p50 ms", "p99 ms", "all events pooled p50 / p99"],
        sse_rows,
    )
    for c in levels:
        pr = per_round[f"c{c}"]
        table += (
            f"\nper-round c={c}: ketch/uvicorn "
            + ", ".join(f"{x:.2f}" for x in pr["ketch/uvicorn rps"])
            + "; ketch/ray "
            + ", ".join(f"{x:.2f}" for x in pr["ketch/ray rps"])
            + "; p50 added µs "
            + ", ".join(f"{x:+.0f}" for x in pr["p50 added us"])
        )
    targets: dict[str, Any] = {}
    for c in levels:
        rc = ratios[f"c{c}"]
        targets[f"c{c} ketch >= 0.6 x uvicorn"] = (
            rc["ketch/uvicorn rps"],
            rc["ketch/uvicorn rps"] >= 0.6,
        )
        targets[f"c{c} ketch >= 2 x Ray Serve"] = (rc["ketch/ray rps"], rc["ketch/ray rps"] >= 2)
    if 1 in levels:
        added = ratios["c1"]["p50 added us (ketch - uvicorn)"]
        targets["c1 p50 added by the gateway <= 1000 us"] = (added, added <= 1000)
    sse_p50 = summary["ketch"]["sse"]["p50_ms"]["median"]
    targets["ketch SSE p50 <= 5 ms"] = (sse_p50, sse_p50 <= 5)
    table += "\n\ntargets:\n" + "\n".join(
        f"  {name}: {v:.2f} -> {'MET' if ok else 'MISSED'}" for name, (v, ok) in targets.items()
    )

    print()
    print(f"ketch web benchmark, {info['date']}")
    print(machine_line(info, info["wrk"]))
    print()
    print(table)
    path = save_result(
        "web",
        {
            "command": " ".join(sys.argv),
            "args": vars(args),
            "machine": info,
            "rounds": rounds,
            "summary": summary,
            "ratios": ratios,
            "per_round": per_round,
            "targets": {k: {"value": v, "met": ok} for k, (v, ok) in targets.items()},
            "table": table,
        },
    )
    print(f"\nfull result: {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
