"""What the bench scripts share besides bench/core.py's helpers: Ray started the one way they
all compare against, Ray Serve behind its HTTP proxy on 127.0.0.1, autoscaling tuned to
scale from zero quickly, waiting for zero replicas or containers, wrk's report, the machine
line printed above each table, and where results are written.

Not a benchmark itself; imported by the scripts (bench/ is on sys.path).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
RESULTS = BENCH / "results"
NPROC = os.cpu_count() or 1

# Ray Serve's proxy and replicas: warnings only, no access log (ketch's has none either).
QUIET = {"log_level": "WARNING", "enable_access_log": False}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_ray() -> None:
    """ray.init as every comparison runs it: all CPUs, no dashboard, quiet. A failed start
    is shut down, or it would leave Ray's helper processes behind."""
    import ray

    try:
        ray.init(
            num_cpus=NPROC,
            include_dashboard=False,
            log_to_driver=False,
            logging_level=logging.WARNING,
            configure_logging=True,
        )
    except BaseException:
        ray.shutdown()
        raise


@contextlib.contextmanager
def serve_http() -> Iterator[int]:
    """Ray and Ray Serve with its HTTP proxy on a free port of 127.0.0.1 (yielded); both are
    shut down afterwards.

    Ray runs without per-RPC token checks (RAY_AUTH_MODE=disabled), its faster setup on one
    machine (see bench/core.py). Its workers start with bench/ on PYTHONPATH, so that
    replicas can import the handlers of bench/*_app.py modules by reference.
    """
    from ray import serve

    os.environ["RAY_AUTH_MODE"] = "disabled"
    old_pp = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(BENCH), old_pp) if p)
    try:
        start_ray()
    finally:
        if old_pp is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = old_pp
    try:
        port = free_port()
        serve.start(http_options={"host": "127.0.0.1", "port": port}, logging_config=QUIET)
        yield port
    finally:
        import ray

        with contextlib.suppress(Exception):
            serve.shutdown()  # type: ignore[no-untyped-call]
        ray.shutdown()


def fast_autoscaling(max_replicas: int, target: int, downscale_s: float) -> dict[str, Any]:
    """Serve autoscaling from and to zero, tuned to react as fast as ketch's short
    scaledown windows: no upscale delay, load metrics every 0.5 s (the default 10 s push
    interval alone adds up to 10 s to a scale from zero), a 2 s look-back, and
    `downscale_s` downscale delays (defaults 30 s and 600 s)."""
    return {
        "min_replicas": 0,
        "initial_replicas": 0,
        "max_replicas": max_replicas,
        "target_ongoing_requests": target,
        "upscale_delay_s": 0,
        "metrics_interval_s": 0.5,
        "look_back_period_s": 2,
        "downscale_delay_s": downscale_s,
        "downscale_to_zero_delay_s": downscale_s,
    }


def serve_replicas(app: str, deployment: str) -> int:
    """Replicas of a Serve deployment in any state (starting ones included)."""
    from ray import serve

    st = serve.status().applications[app].deployments[deployment]
    return int(sum(st.replica_states.values()))


def wait_for_zero(
    count: Callable[[], int], what: str, timeout: float = 120.0, poll: float = 0.05
) -> None:
    """Poll until `count()` is 0 (nothing left running); TimeoutError after `timeout`."""
    t0 = time.monotonic()
    while count():
        if time.monotonic() - t0 > timeout:
            raise TimeoutError(f"{what} did not scale to zero in {timeout:g}s")
        time.sleep(poll)


_WRK_US = {"us": 1.0, "ms": 1e3, "s": 1e6}


def parse_wrk(out: str) -> dict[str, Any]:
    """`wrk --latency`'s report: requests/s, latency percentiles in µs, the count of non-2xx
    answers and the socket errors line (None when there were none)."""

    def q(p: str) -> float:
        m = re.search(rf"^\s+{p}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        assert m is not None, out
        return float(m.group(1)) * _WRK_US[m.group(2)]

    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errors = re.search(r"Socket errors:.*", out)
    return {
        "rps": float(rps.group(1)) if rps else 0.0,
        "p50_us": q("50"),
        "p90_us": q("90"),
        "p99_us": q("99"),
        "non_2xx": int(bad.group(1)) if bad else 0,
        "socket_errors": errors.group(0) if errors else None,
    }


def machine_line(info: dict[str, Any], *also: str) -> str:
    """One line on what ran the bench (from core.machine_info, with loadavg_end set);
    `also` adds notes after the Ray version (its settings, the load generator)."""
    extra = "".join(f", {a}" for a in also)
    dirty = " + uncommitted src changes" if info["ketch_src_dirty"] else ""
    return (
        f"machine: {info['nproc']} CPUs ({info['cpu']}), {info['mem_gib']} GiB, "
        f"Python {info['python']}, Ray {info['ray']}{extra}, "
        f"ketch {info['ketch_commit']}{dirty} (src sha256 {info['ketch_src_sha256']}), "
        f"load average {info['loadavg_start']} -> {info['loadavg_end']}"
    )


def save_result(prefix: str, data: dict[str, Any]) -> Path:
    """Write a run's full result to bench/results/<prefix>-<date>-<time>.json."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{prefix}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(data, indent=1))
    return path
