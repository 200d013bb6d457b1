#!/usr/bin/env python
"""Failures and long requests: what enforcing a timeout, a retry and a long request's result
URL cost, measured against a real ketch server in one run.

    .venv/bin/python bench/failures.py [--n 20] [--requests 1000] [--results 5]

1. Timeout enforcement lag: a function with timeout=1 that would sleep for an hour; the
   time past the limit at which the caller sees FunctionTimeoutError, over --n calls, for
   async code (cancelled in its container) and sync code (its container killed). Before
   each call the function answers a call of 0 s, so a container is up: the lag is the
   enforcement's, not a cold start's. Then a random pause of 0-1 s: the server checks
   deadlines on a 0.25 s sweep, and calls sent back to back would all meet it at the same
   phase (--no-jitter shows that case).
2. Retry overhead: a function that fails on its first attempt, with
   Retries(max_retries=1, initial_delay=1.0, backoff_coefficient=1.0); each attempt writes
   its start time; overhead = gap between the attempts - 1.0 s, over --n calls.
3. Long-request result URL (W14): the server runs with KETCH_REQUEST_TIMEOUT=1; --results
   requests to a route that sleeps 1.5 s get their 303, their results are waited for,
   then --requests GETs of a ready result URL alternate with as many GETs of a fast route
   of the same app (same keep-alive connection, http.client): latency of each, and the
   ratio of medians.

Fresh KETCH_HOME; the rate limit is raised so that the bench measures the gateway, not its
bucket. Prints a table and writes the figures as JSON to bench/results/.
"""

from __future__ import annotations

import argparse
import datetime
import http.client
import json
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

BENCH = Path(__file__).resolve().parent
RESULTS = BENCH / "results"
sys.path.insert(0, str(BENCH))

from core import _table, ketch_app, loadavg, log, machine_info, pct  # noqa: E402


def _summary(values: list[float], scale: float = 1000.0) -> dict[str, float]:
    """median / p99 / max of `values` (seconds) in ms by default."""
    return {
        "median": round(statistics.median(values) * scale, 3),
        "p99": round(pct(values, 99) * scale, 3),
        "max": round(max(values) * scale, 3),
        "n": len(values),
    }


def timeout_lag(n: int, jitter: bool) -> dict[str, Any]:
    from failures_app import LIMIT, async_sleeper, sync_sleeper

    from ketch.exception import FunctionTimeoutError

    out: dict[str, Any] = {}
    for name, fn in (
        ("async (cancelled)", async_sleeper),
        ("sync (container killed)", sync_sleeper),
    ):
        lags = []
        for _ in range(n):
            assert fn.remote(0) == "woke"  # a container is up and idle
            if jitter:
                time.sleep(random.uniform(0, 1))
            t0 = time.perf_counter()
            try:
                fn.remote(3600)
            except FunctionTimeoutError:
                lags.append(time.perf_counter() - t0 - LIMIT)
            else:
                raise AssertionError("the call did not time out")
        out[name] = _summary(lags)
        log(f"timeout lag {name}: median {out[name]['median']} ms, max {out[name]['max']} ms")
    return out


def retry_overhead(n: int) -> dict[str, Any]:
    from failures_app import RETRY_DELAY, fails_once

    overheads, totals = [], []
    with tempfile.TemporaryDirectory(prefix="ketch-bench-retry-") as tmp:
        for i in range(n):
            t0 = time.perf_counter()
            stamps = fails_once.remote(str(Path(tmp) / f"trace-{i}"))
            totals.append(time.perf_counter() - t0 - RETRY_DELAY)
            assert len(stamps) == 2
            overheads.append(stamps[1] - stamps[0] - RETRY_DELAY)
    result = {"gap_minus_delay": _summary(overheads), "call_time_minus_delay": _summary(totals)}
    log(f"retry overhead: median {result['gap_minus_delay']['median']} ms")
    return result


def _get(conn: http.client.HTTPConnection, path: str) -> tuple[int, dict[str, str], bytes]:
    conn.request("GET", path)
    resp = conn.getresponse()
    body = resp.read()
    return resp.status, {k.lower(): v for k, v in resp.getheaders()}, body


def result_urls(url: str, n_results: int, n_requests: int) -> dict[str, Any]:
    parts = urlsplit(url)
    assert parts.hostname is not None and parts.port is not None
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
    status, _, body = _get(conn, "/fast")
    assert status == 200, (status, body)
    # Long requests: each gets its 303; its result URL is then visited until it answers.
    locations = []
    for i in range(n_results):
        status, headers, _ = _get(conn, f"/slow?seconds=1.5&i={i}")
        assert status == 303, status
        locations.append(headers["location"])
    for location in locations:
        while True:
            status, headers, body = _get(conn, location)
            if status != 303:
                break
        assert status == 200 and json.loads(body) == {"hello": "world"}, (status, body)
    fast: list[float] = []
    kept: list[float] = []
    warmup = min(100, n_requests)
    for i in range(warmup + n_requests):
        t0 = time.perf_counter()
        status, _, body = _get(conn, "/fast")
        t1 = time.perf_counter()
        assert status == 200
        status, _, body = _get(conn, locations[i % len(locations)])
        t2 = time.perf_counter()
        assert status == 200 and body == b'{"hello":"world"}', (status, body)
        if i >= warmup:
            fast.append(t1 - t0)
            kept.append(t2 - t1)
    conn.close()
    out = {"result_url": _summary(kept, 1e6), "fast_route": _summary(fast, 1e6)}
    out["ratio_median"] = round(statistics.median(kept) / statistics.median(fast), 3)
    log(
        f"result URL p50 {out['result_url']['median']} us vs fast route "
        f"{out['fast_route']['median']} us (ratio {out['ratio_median']})"
    )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=20, help="timeout and retry samples each")
    ap.add_argument("--requests", type=int, default=1000, help="result-URL GETs measured")
    ap.add_argument("--results", type=int, default=5, help="distinct kept results")
    ap.add_argument(
        "--no-jitter",
        action="store_true",
        help="send the timed-out calls back to back (no random pause)",
    )
    ap.add_argument("--keep-home", action="store_true")
    args = ap.parse_args()

    os.environ["KETCH_REQUEST_TIMEOUT"] = "1"
    os.environ["KETCH_RATE_LIMIT"] = "1000000000"
    os.environ["KETCH_RATE_BURST"] = "1000000000"
    os.environ.setdefault("KETCH_GATEWAY_PORT", "0")
    import failures_app

    info = machine_info()
    report: dict[str, Any] = {"machine": info, "args": vars(args)}
    with ketch_app(failures_app.app, args.keep_home):
        url = failures_app.web.get_web_url()
        assert url is not None
        report["timeout_lag_ms"] = timeout_lag(args.n, not args.no_jitter)
        report["retry_overhead_ms"] = retry_overhead(args.n)
        report["result_url_us"] = result_urls(url, args.results, args.requests)
    info["loadavg_end"] = loadavg()

    print(f"\nketch failures benchmark, {info['date']}")
    print(
        f"machine: {info['nproc']} CPUs ({info['cpu']}), Python {info['python']}, "
        f"ketch {info['ketch_commit']} (src sha256 {info['ketch_src_sha256']}"
        f"{', dirty' if info['ketch_src_dirty'] else ''}), "
        f"load average {info['loadavg_start']} -> {info['loadavg_end']}"
    )
    lag = report["timeout_lag_ms"]
    phase = "back to back" if args.no_jitter else "random 0-1 s pause before each"
    print(
        _table(
            f"\ntimeout enforcement lag (limit 1 s; ms past it), {args.n} calls each, {phase}",
            ["", "median ms", "p99 ms", "max ms"],
            [(k, v["median"], v["p99"], v["max"]) for k, v in lag.items()],
        )
    )
    retry = report["retry_overhead_ms"]
    print(
        _table(
            f"\nretry overhead (configured delay 1.0 s), {args.n} calls",
            ["", "median ms", "p99 ms", "max ms"],
            [
                (
                    "gap between attempts - delay",
                    *(retry["gap_minus_delay"][k] for k in ("median", "p99", "max")),
                ),
                (
                    "whole call - delay",
                    *(retry["call_time_minus_delay"][k] for k in ("median", "p99", "max")),
                ),
            ],
        )
    )
    res = report["result_url_us"]
    print(
        _table(
            f"\nGET of a ready long-request result URL vs a fast route, "
            f"{args.requests} each, alternating on one keep-alive connection",
            ["", "p50 us", "p99 us"],
            [
                (
                    "result URL (kept response)",
                    res["result_url"]["median"],
                    res["result_url"]["p99"],
                ),
                (
                    "fast route (through to the container)",
                    res["fast_route"]["median"],
                    res["fast_route"]["p99"],
                ),
                ("ratio of medians (result / fast)", res["ratio_median"], ""),
            ],
        )
    )
    RESULTS.mkdir(exist_ok=True)
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%d-%H%M%S")
    path = RESULTS / f"failures-{stamp}.json"
    path.write_text(json.dumps(report, indent=2))
    print(f"\nfull result: {path.relative_to(BENCH.parent)}")


if __name__ == "__main__":
    main()
