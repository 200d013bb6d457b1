#!/usr/bin/env python
"""This checkout against another copy of ketch (an older commit), side by side in one run.

    mkdir -p /tmp/base && git archive <commit> | tar -x -C /tmp/base
    .venv/bin/python bench/versus.py remote --baseline /tmp/base [--rounds 5 --calls 2000]
    .venv/bin/python bench/versus.py gateway --baseline /tmp/base [--rounds 3]
    .venv/bin/python bench/versus.py map --baseline /tmp/base [--rounds 5 --n 10000]
    .venv/bin/python bench/versus.py web --baseline /tmp/base [--rounds 5 --duration 3]
    .venv/bin/python bench/versus.py cold --baseline /tmp/base [--rounds 5 --samples 5]

remote: warm `.remote()` latency (p50, p99) over one warm container, each round in a fresh
KETCH_HOME with its own server, the two trees taking turns (round 1 this tree, round 1 the
baseline, ...) so that load from elsewhere hits both alike. gateway: bench/gateway_bench.py's
`gateway` row (requests/s through the Gateway in front of uvicorn), run under each tree in
turn. map: `.map` of --n trivial inputs over two warm containers (inputs/s). web: a deployed
FastAPI endpoint reached through the whole path (gateway in the server, scheduler, uvicorn in
the container) by a keep-alive Python load generator at concurrency 1 and 32 (requests/s).
cold: `.remote()` on a function scaled to zero until its result (ms), --samples per round
(`--env BENCH_COLD_IMAGE=rootfs` runs it on a root-filesystem image; with `--baseline .
--baseline-env BENCH_COLD_IMAGE=venv` that is root filesystem against venv, in one tree).
Prints each round and the after/before ratio of the medians (above 1: this tree is faster).

Only the tree's `src/` changes between the two sides (PYTHONPATH puts it first); the venv,
Python and the load are the same.
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

# Runs inside a child process whose PYTHONPATH selects the ketch under test.
_REMOTE = r"""
import json, os, statistics, sys, time
sys.path.insert(0, os.environ["BENCH_DIR"])
import ketch
from bench_app import rt_app, rt_echo
calls = int(sys.argv[1])
with rt_app.run():
    for i in range(200):
        rt_echo.remote(i)
    lat = []
    for i in range(calls):
        t0 = time.perf_counter()
        rt_echo.remote(i)
        lat.append(time.perf_counter() - t0)
lat.sort()
print(json.dumps({"p50": lat[len(lat) // 2], "p99": lat[int(len(lat) * 0.99)],
                  "ketch": ketch.__file__}))
"""


_MAP = r"""
import json, os, sys, time
sys.path.insert(0, os.environ["BENCH_DIR"])
from bench_app import map_app, map_echo
n = int(sys.argv[1])
with map_app.run(show_logs=False):
    map_echo.remote(0)
    list(map_echo.map(range(1000)))
    t0 = time.perf_counter()
    out = list(map_echo.map(range(n)))
    dt = time.perf_counter() - t0
assert out == list(range(n))
print(json.dumps({"rate": n / dt}))
"""

_WEB = r"""
import asyncio, json, os, re, sys, time, urllib.request
from urllib.parse import urlsplit
sys.path.insert(0, os.environ["BENCH_DIR"])
from bench_web_app import web_app, hello
duration = float(sys.argv[1])
levels = [int(c) for c in sys.argv[2].split(",")]

async def client(host, port, hosthdr, stop_at, record_from, done):
    reader, writer = await asyncio.open_connection(host, port)
    req = f"GET / HTTP/1.1\r\nHost: {hosthdr}\r\n\r\n".encode()
    try:
        while True:
            t0 = time.perf_counter()
            if t0 >= stop_at:
                return
            writer.write(req)
            head = await reader.readuntil(b"\r\n\r\n")
            m = re.search(rb"(?i)\r\ncontent-length: *(\d+)", head)
            assert head.startswith(b"HTTP/1.1 200") and m is not None, head
            await reader.readexactly(int(m.group(1)))
            if t0 >= record_from:
                done.append(1)
    finally:
        writer.close()

async def load(url, c):
    u = urlsplit(url)
    start = time.perf_counter()
    done = []
    await asyncio.gather(*(client(u.hostname if not u.hostname.endswith(".localhost")
                                  else "127.0.0.1", u.port, u.netloc, start + 1 + duration,
                                  start + 1, done) for _ in range(c)))
    return len(done) / duration

with web_app.run(show_logs=False):
    url = hello.get_web_url()
    for _ in range(600):
        try:
            urllib.request.urlopen(url, timeout=5).read()
            break
        except Exception:
            time.sleep(0.1)
    import uvloop
    print(json.dumps({str(c): uvloop.run(load(url, c)) for c in levels}))
"""

_COLD = r"""
import json, os, sys, time
sys.path.insert(0, os.environ["BENCH_DIR"])
from bench_app import cold_app, cold_probe
from ketch._client.client import Client
samples = int(sys.argv[1])

def containers():
    import httpx
    from ketch._client.discovery import read_server
    from ketch.config import Config
    info = read_server(Config.load())
    resp = httpx.get(f"{info.api_url}/v1/status", timeout=30,
                     headers={"Authorization": f"Bearer {info.token}"})
    resp.raise_for_status()
    return [c for c in resp.json()["containers"].values() if c["app_id"] == cold_app.app_id]

out = []
with cold_app.run(show_logs=False):
    cold_probe.remote(-1)
    for i in range(samples):
        t_end = time.monotonic() + 60
        while containers() and time.monotonic() < t_end:
            time.sleep(0.05)
        time.sleep(0.5)
        t0 = time.perf_counter()
        cold_probe.remote(i)
        out.append(time.perf_counter() - t0)
out.sort()
print(json.dumps({"median": out[len(out) // 2]}))
"""


def _env(tree: Path, home: str, extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(tree / "src")
    env["KETCH_HOME"] = home
    env["KETCH_GATEWAY_PORT"] = "0"
    env["BENCH_DIR"] = str(BENCH)
    # web: measure the path, not the per-workspace rate limit (200 req/s by default)
    env["KETCH_RATE_LIMIT"] = "1e9"
    env["KETCH_RATE_BURST"] = str(10**9)
    env.update(extra or {})
    return env


def _stop(home: str, env: dict[str, str]) -> None:
    subprocess.run(
        [sys.executable, "-m", "ketch.cli", "server", "stop"],
        env=env,
        capture_output=True,
        timeout=60,
        check=False,
    )


def remote_round(tree: Path, calls: int, extra: dict[str, str]) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="kv-", dir="/tmp") as home:
        env = _env(tree, home, extra)
        try:
            out = subprocess.run(
                [sys.executable, "-c", _REMOTE, str(calls)],
                env=env,
                capture_output=True,
                text=True,
                timeout=600,
                check=True,
            )
        finally:
            _stop(home, env)
    result: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def _child(tree: Path, extra: dict[str, str], script: str, *argv: str) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="kv-", dir="/tmp") as home:
        env = _env(tree, home, extra)
        try:
            out = subprocess.run(
                [sys.executable, "-c", script, *argv],
                env=env,
                capture_output=True,
                text=True,
                timeout=600,
                check=False,
            )
        finally:
            _stop(home, env)
    if out.returncode != 0:
        raise RuntimeError(f"{tree}: child failed:\n{out.stderr[-3000:]}")
    result: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def gateway_round(tree: Path, duration: float, extra: dict[str, str]) -> float:
    env = _env(tree, tempfile.gettempdir(), extra)
    out = subprocess.run(
        [
            sys.executable,
            str(BENCH / "gateway_bench.py"),
            "--duration",
            str(duration),
            "--concurrency",
            "32",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    )
    for line in out.stdout.splitlines():
        cells = line.split()
        if cells and cells[0] == "gateway":
            return float(cells[2].replace(",", ""))
    raise RuntimeError(f"no gateway row in:\n{out.stdout}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("what", choices=["remote", "gateway", "map", "web", "webcpu", "cold"])
    ap.add_argument("--baseline", type=Path, required=True, help="a copy of the older tree")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--calls", type=int, default=2000)
    ap.add_argument("--duration", type=float, default=5.0)
    ap.add_argument("--n", type=int, default=10_000, help="map: inputs per map")
    ap.add_argument("--samples", type=int, default=5, help="cold: cold starts per round")
    ap.add_argument("--concurrency", default="1,32", help="web: load levels")
    ap.add_argument("--env", action="append", default=[], metavar="K=V", help="for both sides")
    ap.add_argument(
        "--baseline-env",
        action="append",
        default=[],
        metavar="K=V",
        help="for the baseline only (e.g. --baseline . --baseline-env KETCH_SANDBOX=off)",
    )
    args = ap.parse_args()
    sides = {"this": ROOT, "baseline": args.baseline.resolve()}
    both = dict(kv.split("=", 1) for kv in args.env)
    args.extra = {
        "this": both,
        "baseline": {**both, **dict(kv.split("=", 1) for kv in args.baseline_env)},
    }
    if args.what in ("map", "web", "webcpu", "cold"):
        _children(args, sides)
        return
    got: dict[str, list[float]] = {name: [] for name in sides}
    for r in range(args.rounds):
        for name, tree in sides.items():
            if args.what == "remote":
                res = remote_round(tree, args.calls, args.extra[name])
                got[name].append(res["p50"])
                print(
                    f"round {r + 1} {name:8} p50 {res['p50'] * 1e6:7.0f} us  "
                    f"p99 {res['p99'] * 1e6:7.0f} us",
                    flush=True,
                )
            else:
                rps = gateway_round(tree, args.duration, args.extra[name])
                got[name].append(rps)
                print(f"round {r + 1} {name:8} {rps:9.0f} req/s", flush=True)
    this, base = statistics.median(got["this"]), statistics.median(got["baseline"])
    if args.what == "remote":
        print(
            f"median p50: this {this * 1e6:.0f} us, baseline {base * 1e6:.0f} us; "
            f"speed after/before {base / this:.3f}x"
        )
    else:
        print(
            f"median: this {this:.0f} req/s, baseline {base:.0f} req/s; "
            f"after/before {this / base:.3f}x"
        )


def _children(args: argparse.Namespace, sides: dict[str, Path]) -> None:
    """map / web / cold: each round runs one child per tree, in turn; larger is better
    except for cold (ms), whose ratio is inverted so that above 1 still means faster."""
    if args.what == "map":
        script, argv, unit = _MAP, [str(args.n)], "inputs/s"
    elif args.what == "web":
        script, argv, unit = _WEB, [str(args.duration), args.concurrency], "req/s"
    elif args.what == "webcpu":
        # CPU per request (µs, smaller is better) besides the rate, at one concurrency.
        script = (BENCH / "versus_webcpu_child.py").read_text()
        argv, unit = [str(args.duration), args.concurrency.split(",")[-1]], ""
    else:
        script, argv, unit = _COLD, [str(args.samples)], "s"
    got: dict[str, dict[str, list[float]]] = {name: {} for name in sides}
    for r in range(args.rounds):
        for name, tree in sides.items():
            res = _child(tree, args.extra[name], script, *argv)
            for key, value in res.items():
                got[name].setdefault(key, []).append(value)
            shown = "  ".join(f"{k}: {v:,.4g} {unit}" for k, v in res.items())
            print(f"round {r + 1} {name:8} {shown}", flush=True)
    for key in got["this"]:
        this, base = statistics.median(got["this"][key]), statistics.median(got["baseline"][key])
        ratio = base / this if args.what == "cold" or key.endswith("_us") else this / base
        print(
            f"{args.what} {key}: median this {this:,.4g}, baseline {base:,.4g} {unit}; "
            f"after/before speed {ratio:.3f}x"
        )


if __name__ == "__main__":
    main()
