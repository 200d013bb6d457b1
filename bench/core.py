#!/usr/bin/env python
"""Core performance of ketch, measured side by side with Ray in one run.

    .venv/bin/python bench/core.py roundtrip   # warm .remote() latency vs a Ray actor call
    .venv/bin/python bench/core.py map         # .map throughput on 2 warm containers vs Ray
    .venv/bin/python bench/core.py cold        # cold start vs a new Ray actor / Ray Serve
    .venv/bin/python bench/core.py all         # the three, one after the other

Each command prints a table (ketch, the comparison, ratios), the machine it ran on, and
writes the full result (every round, every sample) as JSON to bench/results/.

Fairness: ketch and Ray take turns within the run (round 1 ketch, round 1 Ray, round 2
ketch, ...) so that load from elsewhere on the machine hits both alike. Ray is started for its
turn and shut down after it (`ray.init(num_cpus=<nproc>)`, no dashboard), so its background
processes never compete with a ketch round; ketch's server stays up between its rounds, idle
(it wakes once a second). Every ketch run uses a fresh KETCH_HOME and stops its server.

Needs `ray[serve]` in the venv: `.venv/bin/pip install -e '.[bench]'`.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import gc
import hashlib
import math
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(BENCH))  # bench_app, _common

from _common import (  # noqa: E402
    NPROC,
    fast_autoscaling,
    machine_line,
    save_result,
    serve_replicas,
    start_ray,
    wait_for_zero,
)


# -- small helpers ---------------------------------------------------------------------------
def pct(values: list[float], p: float) -> float:
    """Nearest-rank percentile."""
    s = sorted(values)
    k = max(0, min(len(s) - 1, math.ceil(p / 100 * len(s)) - 1))
    return s[k]


def spread(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def loadavg() -> float:
    return round(os.getloadavg()[0], 2)


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _git(*args: str) -> str:
    try:
        return subprocess.run(
            ["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def machine_info() -> dict[str, Any]:
    import ray

    src = ROOT / "src" / "ketch"
    digest = hashlib.sha256()
    for p in sorted(src.rglob("*.py")):
        digest.update(str(p.relative_to(src)).encode())
        digest.update(p.read_bytes())
    cpu = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "nproc": NPROC,
        "cpu": cpu,
        "mem_gib": round(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / 2**30, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "ray": ray.__version__,
        "ketch_commit": _git("rev-parse", "--short", "HEAD"),
        # Other engineers edit src/ while benchmarks run: say whether the tree was clean, and
        # fingerprint what was actually measured.
        "ketch_src_dirty": bool(_git("status", "--porcelain", "--", "src")),
        "ketch_src_sha256": digest.hexdigest()[:16],
        "loadavg_start": loadavg(),
    }


# -- ketch side ------------------------------------------------------------------------------
class Ketch:
    """A private ketch server (fresh KETCH_HOME) for one benchmark command."""

    def __init__(self, keep_home: bool = False) -> None:
        self.home = Path(tempfile.mkdtemp(prefix="ketch-bench-"))
        self.keep_home = keep_home
        os.environ["KETCH_HOME"] = str(self.home)
        from ketch._client.client import Client

        Client.reset()

    def status(self) -> dict[str, Any]:
        import httpx

        from ketch._client.discovery import read_server
        from ketch.config import Config

        info = read_server(Config.load())
        assert info is not None, "the ketch server is not running"
        resp = httpx.get(
            f"{info.api_url}/v1/status",
            headers={"Authorization": f"Bearer {info.token}"},
            timeout=30,
        )
        resp.raise_for_status()
        data: dict[str, Any] = resp.json()
        return data

    def containers(self, app_id: str) -> list[dict[str, Any]]:
        return [c for c in self.status()["containers"].values() if c["app_id"] == app_id]

    def wait(
        self,
        what: str,
        cond: Callable[[list[dict[str, Any]]], bool],
        app_id: str,
        timeout: float = 120.0,
        poll: float = 0.05,
    ) -> float:
        t0 = time.monotonic()
        while True:
            cs = self.containers(app_id)
            if cond(cs):
                return time.monotonic() - t0
            if time.monotonic() - t0 > timeout:
                raise TimeoutError(f"ketch: {what} not reached in {timeout}s: {cs}")
            time.sleep(poll)

    def wait_ready(self, app_id: str, n: int) -> float:
        return self.wait(
            f"{n} ready containers", lambda cs: sum(c["state"] == "ready" for c in cs) >= n, app_id
        )

    def wait_none(self, app_id: str) -> float:
        return self.wait("no containers", lambda cs: not cs, app_id)

    def close(self) -> None:
        from ketch._client.client import Client
        from ketch._client.discovery import stop_server
        from ketch._utils.aio import run_sync
        from ketch.config import Config

        # Close the SDK's connection first: a live client reconnects when its server goes
        # away, and reconnecting starts a new server (which would outlive this process).
        current = Client._current
        if current is not None:
            with contextlib.suppress(Exception):
                run_sync(current.close())
        Client.reset()
        with contextlib.suppress(Exception):
            stop_server(Config.load())
        _kill_containers(self.home)
        if not self.keep_home:
            shutil.rmtree(self.home, ignore_errors=True)


def _kill_containers(home: Path) -> None:
    """Any container of this home still alive after its server stopped (there should be none)."""
    marker = str(home).encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if b"ketch._runtime" in cmdline and marker in cmdline + environ:
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(entry.name), signal.SIGKILL)


@contextlib.contextmanager
def ketch_app(app: Any, keep_home: bool) -> Iterator[Ketch]:
    k = Ketch(keep_home)
    try:
        t0 = time.perf_counter()
        with app.run(show_logs=False):
            log(f"ketch: {app.name} deployed in {time.perf_counter() - t0:.1f}s (home {k.home})")
            yield k
    finally:
        k.close()


# -- Ray side --------------------------------------------------------------------------------
RAY_AUTH = "disabled"  # set from --ray-auth


@contextlib.contextmanager
def ray_session() -> Iterator[Any]:
    import ray

    # Ray 2.5x+ checks a token on every RPC by default. On one machine, with one user, Ray is
    # faster without it (about 8% on the actor round trip here), so by default it runs without:
    # the comparison gets Ray's quicker configuration. --ray-auth default keeps Ray's default.
    if RAY_AUTH == "disabled":
        os.environ["RAY_AUTH_MODE"] = "disabled"
    else:
        os.environ.pop("RAY_AUTH_MODE", None)
    t0 = time.perf_counter()
    start_ray()
    # Let the worker processes Ray prestarts at init come up before anything is measured.
    time.sleep(2.0)
    log(f"ray: up in {time.perf_counter() - t0:.1f}s")
    try:
        yield ray
    finally:
        ray.shutdown()


def _ray_defs() -> dict[str, Any]:
    import ray

    @ray.remote
    class Echo:
        def f(self, x: int) -> int:
            return x

    @ray.remote
    def echo(x: int) -> int:
        return x

    return {"Echo": Echo, "echo": echo}


# -- 1. warm round trip ----------------------------------------------------------------------
def timed_calls(call: Callable[[int], Any], n: int) -> list[float]:
    """n sequential calls; each one's latency in microseconds."""
    out = []
    clock = time.perf_counter_ns
    gc.collect()
    for i in range(n):
        t = clock()
        v = call(i)
        out.append((clock() - t) / 1e3)
        if v != i:
            raise AssertionError(f"call({i}) returned {v!r}")
    return out


def bench_roundtrip(args: argparse.Namespace) -> dict[str, Any]:
    import bench_app

    rounds: dict[str, list[dict[str, Any]]] = {"ketch": [], "ray_actor": []}
    with ketch_app(bench_app.rt_app, args.keep_home) as k:
        fn = bench_app.rt_echo
        fn.remote(0)  # the pool (and its min_containers) exists from the first input on
        k.wait_ready(bench_app.rt_app.app_id, 1)
        for r in range(args.rounds):
            la = loadavg()
            timed_calls(fn.remote, args.warmup)
            lat = timed_calls(fn.remote, args.calls)
            rounds["ketch"].append(_lat_summary(lat, la))
            log(f"round {r + 1}: ketch     p50 {pct(lat, 50):7.0f} us  p99 {pct(lat, 99):7.0f} us")
            with ray_session() as ray:
                actor = _ray_defs()["Echo"].remote()
                ray.get(actor.f.remote(0))
                la = loadavg()

                def rcall(x: int, actor: Any = actor) -> Any:
                    return ray.get(actor.f.remote(x))

                timed_calls(rcall, args.warmup)
                lat = timed_calls(rcall, args.calls)
                rounds["ray_actor"].append(_lat_summary(lat, la))
                log(
                    f"round {r + 1}: ray actor p50 {pct(lat, 50):7.0f} us  "
                    f"p99 {pct(lat, 99):7.0f} us"
                )
    summary = {
        side: {
            "p50_us": spread([x["p50_us"] for x in rs]),
            "p99_us": spread([x["p99_us"] for x in rs]),
        }
        for side, rs in rounds.items()
    }
    ratio = {
        q: summary["ketch"][q]["median"] / summary["ray_actor"][q]["median"]
        for q in ("p50_us", "p99_us")
    }
    per_round = [
        rounds["ketch"][i]["p50_us"] / rounds["ray_actor"][i]["p50_us"] for i in range(args.rounds)
    ]
    rows = [
        ("p50 (us)", summary["ketch"]["p50_us"], summary["ray_actor"]["p50_us"], ratio["p50_us"]),
        ("p99 (us)", summary["ketch"]["p99_us"], summary["ray_actor"]["p99_us"], ratio["p99_us"]),
    ]
    table = _table(
        f"warm round trip: {args.calls} sequential calls after {args.warmup} warm-up, "
        f"{args.rounds} rounds (median [min-max] of the rounds)",
        ["", "ketch .remote()", "Ray actor call", "ketch/Ray"],
        rows,
    )
    target = summary["ketch"]["p50_us"]["median"] <= summary["ray_actor"]["p50_us"]["median"]
    table += (
        f"\nper-round p50 ratio ketch/Ray: {', '.join(f'{x:.2f}' for x in per_round)}"
        f"\ntarget ketch p50 <= Ray p50: {'MET' if target else 'MISSED'}"
    )
    return {
        "rounds": rounds,
        "summary": summary,
        "ratio": ratio,
        "per_round_p50_ratio": per_round,
        "target_met": target,
        "table": table,
    }


def _lat_summary(lat: list[float], load: float) -> dict[str, Any]:
    return {
        "n": len(lat),
        "p50_us": pct(lat, 50),
        "p90_us": pct(lat, 90),
        "p99_us": pct(lat, 99),
        "mean_us": statistics.fmean(lat),
        "min_us": min(lat),
        "max_us": max(lat),
        "loadavg": load,
    }


# -- 2. map throughput -----------------------------------------------------------------------
def bench_map(args: argparse.Namespace) -> dict[str, Any]:
    import bench_app

    n = args.n
    expect = list(range(n))
    sides = ("ketch", "ray_tasks", "ray_2actors", "ray_actorpool")
    rounds: dict[str, list[dict[str, Any]]] = {s: [] for s in sides}

    def run(side: str, fn: Callable[[], list[Any]]) -> None:
        gc.collect()
        la = loadavg()
        t = time.perf_counter()
        out = fn()
        dt = time.perf_counter() - t
        if out != expect:
            raise AssertionError(f"{side}: wrong results")
        rounds[side].append({"seconds": dt, "inputs_per_s": n / dt, "loadavg": la})
        log(f"{side:14s} {n / dt:9.0f} inputs/s")

    with ketch_app(bench_app.map_app, args.keep_home) as k:
        fn = bench_app.map_echo
        # One input first. Since bbe2204 min_containers warms a pool at deploy; before that the
        # pool (and its min_containers) appeared with the first input, and a .map burst as the
        # first input could start a container per input (see docs/benchmarks.md).
        fn.remote(0)
        k.wait_ready(bench_app.map_app.app_id, 2)
        list(fn.map(range(1000)))  # warm-up
        states = [c["state"] for c in k.containers(bench_app.map_app.app_id)]
        if states != ["ready", "ready"]:
            raise AssertionError(f"expected 2 ready containers, found {states}")
        for r in range(args.rounds):
            log(f"round {r + 1}")
            run("ketch", lambda: list(fn.map(range(n))))
            with ray_session() as ray:
                defs = _ray_defs()
                echo = defs["echo"]
                actors = [defs["Echo"].remote() for _ in range(2)]
                ray.get([echo.remote(i) for i in range(1000)])  # warm-up
                ray.get([actors[i % 2].f.remote(i) for i in range(1000)])
                from ray.util import ActorPool

                def tasks(echo: Any = echo) -> list[Any]:
                    return list(ray.get([echo.remote(i) for i in range(n)]))

                def round_robin(actors: list[Any] = actors) -> list[Any]:
                    return list(ray.get([actors[i % 2].f.remote(i) for i in range(n)]))

                def actor_pool(actors: list[Any] = actors) -> list[Any]:
                    return list(ActorPool(actors).map(lambda a, v: a.f.remote(v), range(n)))

                run("ray_tasks", tasks)
                run("ray_2actors", round_robin)
                run("ray_actorpool", actor_pool)
    summary = {s: spread([x["inputs_per_s"] for x in rs]) for s, rs in rounds.items()}
    ketch_rate = summary["ketch"]["median"]
    ratio = {s: ketch_rate / summary[s]["median"] for s in sides[1:]}
    per_round = {
        s: [
            rounds["ketch"][i]["inputs_per_s"] / rounds[s][i]["inputs_per_s"]
            for i in range(args.rounds)
        ]
        for s in sides[1:]
    }
    labels = {
        "ray_tasks": "Ray tasks",
        "ray_2actors": "Ray 2 actors (round robin)",
        "ray_actorpool": "Ray ActorPool(2).map",
    }
    rows: list[tuple[Any, ...]] = [("ketch .map, 2 containers", summary["ketch"], None)]
    rows += [(labels[s], summary[s], ratio[s]) for s in sides[1:]]
    table = _table(
        f"map throughput: {n} trivial inputs, {args.rounds} rounds (inputs/s, median [min-max])",
        ["", "inputs/s", "ketch/this"],
        rows,
    )
    target = ketch_rate >= summary["ray_tasks"]["median"]
    table += "\nper-round ketch/Ray tasks: " + ", ".join(f"{x:.2f}" for x in per_round["ray_tasks"])
    table += f"\ntarget ketch >= Ray tasks: {'MET' if target else 'MISSED'}"
    return {
        "n": n,
        "rounds": rounds,
        "summary": summary,
        "ratio": ratio,
        "per_round_ratio": per_round,
        "target_met": target,
        "table": table,
    }


# -- 3. cold start ---------------------------------------------------------------------------
def bench_cold(args: argparse.Namespace) -> dict[str, Any]:
    import bench_app

    samples: dict[str, list[dict[str, Any]]] = {
        "ketch": [],
        "ray_actor": [],
        "ray_actor_new_process": [],
        "ray_serve": [],
    }
    serve_error = None
    per_rep = max(1, math.ceil(args.samples / args.reps))
    with ketch_app(bench_app.cold_app, args.keep_home) as k:
        app_id = bench_app.cold_app.app_id
        fn = bench_app.cold_probe
        fn.remote(-1)  # the image is built at deploy; this also warms the OS page cache
        for rep in range(args.reps):
            log(f"repetition {rep + 1}/{args.reps}")
            # ketch: scale to zero, then time .remote() until its result.
            for i in range(per_rep):
                k.wait_none(app_id)
                time.sleep(args.settle)
                la = loadavg()
                t0_wall = time.time()
                t = time.perf_counter()
                x, stamps = fn.remote(i)
                dt = time.perf_counter() - t
                t1_wall = time.time()
                assert x == i
                samples["ketch"].append(
                    {
                        "ms": dt * 1e3,
                        "loadavg": la,
                        # phases, from wall clocks of this process and the container's
                        "to_process_start_ms": (stamps["process_start"] - t0_wall) * 1e3,
                        "process_start_to_user_import_ms": (
                            stamps["imported"] - stamps["process_start"]
                        )
                        * 1e3,
                        "user_import_to_call_ms": (stamps["called"] - stamps["imported"]) * 1e3,
                        "call_to_result_ms": (t1_wall - stamps["called"]) * 1e3,
                    }
                )
                log(f"ketch cold start {dt * 1e3:7.1f} ms")
            k.wait_none(app_id)
            with ray_session() as ray:
                Echo = _ray_defs()["Echo"]
                for kind in ("ray_actor", "ray_actor_new_process"):
                    for i in range(per_rep):
                        # A runtime_env of its own keeps Ray from reusing a worker process
                        # it has already started: the actor gets a new process.
                        opts = (
                            {}
                            if kind == "ray_actor"
                            else {"runtime_env": {"env_vars": {"BENCH_SAMPLE": f"{rep}.{i}"}}}
                        )
                        time.sleep(max(args.settle, 0.5))
                        la = loadavg()
                        t = time.perf_counter()
                        actor = Echo.options(**opts).remote()
                        v = ray.get(actor.f.remote(i))
                        dt = time.perf_counter() - t
                        assert v == i
                        ray.kill(actor)
                        samples[kind].append({"ms": dt * 1e3, "loadavg": la})
                        log(f"{kind} {dt * 1e3:7.1f} ms")
                if not args.no_serve and serve_error is None:
                    try:
                        samples["ray_serve"] += _serve_cold(per_rep, args.settle)
                    except Exception as exc:  # reported, not hidden
                        serve_error = repr(exc)
                        log(f"ray serve failed: {serve_error}")
    summary = {s: spread([x["ms"] for x in xs]) for s, xs in samples.items() if xs}
    phases = {
        p: spread([x[p] for x in samples["ketch"]])
        for p in (
            "to_process_start_ms",
            "process_start_to_user_import_ms",
            "user_import_to_call_ms",
            "call_to_result_ms",
        )
    }
    km = summary["ketch"]["median"]
    labels = {
        "ray_actor": "Ray: new actor + first call",
        "ray_actor_new_process": "Ray: new actor, new worker process",
        "ray_serve": "Ray Serve: scale from zero",
    }
    rows: list[tuple[Any, ...]] = [("ketch: .remote() from zero", summary["ketch"], None)]
    rows += [(labels[s], summary[s], km / summary[s]["median"]) for s in labels if s in summary]
    table = _table(
        f"cold start, ms ({len(samples['ketch'])} samples each, median [min-max])",
        ["", "ms", "ketch/this"],
        rows,
    )
    table += "\nketch phases (median ms): " + ", ".join(
        f"{p.removesuffix('_ms')} {v['median']:.0f}" for p, v in phases.items()
    )
    if serve_error:
        table += f"\nRay Serve: not measured ({serve_error})"
    target = km <= 300.0
    table += f"\ntarget ketch median <= 300 ms: {'MET' if target else 'MISSED'}"
    return {
        "samples": samples,
        "summary": summary,
        "ketch_phases": phases,
        "ratio": {s: km / summary[s]["median"] for s in labels if s in summary},
        "serve_error": serve_error,
        "target_met": target,
        "table": table,
    }


def _serve_cold(n: int, settle: float) -> list[dict[str, Any]]:
    """Ray Serve's scale from zero: a deployment with min_replicas=0, called through a handle
    once it has no replica left."""
    from ray import serve

    serve.start(proxy_location="Disabled", logging_config={"log_level": "WARNING"})

    @serve.deployment(
        # Tuned for fast scaling, like ketch's scaledown_window=1 (see fast_autoscaling).
        autoscaling_config=fast_autoscaling(max_replicas=1, target=1, downscale_s=1),
        # Scale-down speed only (not measured): an idle replica may go at once.
        graceful_shutdown_wait_loop_s=0.1,
        graceful_shutdown_timeout_s=1,
    )
    class ServeEcho:
        def __call__(self, x: int) -> int:
            return x

    handle = serve.run(ServeEcho.bind(), name="bench-cold", route_prefix=None)
    out = []
    try:
        for i in range(n):
            wait_for_zero(lambda: serve_replicas("bench-cold", "ServeEcho"), "Ray Serve")
            time.sleep(settle)
            la = loadavg()
            t = time.perf_counter()
            v = handle.remote(i).result()
            dt = time.perf_counter() - t
            assert v == i
            out.append({"ms": dt * 1e3, "loadavg": la})
            log(f"ray_serve {dt * 1e3:7.1f} ms")
    finally:
        serve.shutdown()
    return out


# -- output ----------------------------------------------------------------------------------
def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, dict):
        return f"{_num(v['median'])} [{_num(v['min'])}-{_num(v['max'])}]"
    if isinstance(v, float):
        return f"{v:.2f}"
    return str(v)


def _num(x: float) -> str:
    return f"{x:.0f}" if abs(x) >= 10 else f"{x:.1f}"


def _table(title: str, header: list[str], rows: list[tuple[Any, ...]]) -> str:
    cells = [header] + [[str(r[0])] + [_fmt(v) for v in r[1:]] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = [title]
    for j, row in enumerate(cells):
        lines.append(
            "  ".join(
                c.ljust(w) if i == 0 else c.rjust(w)
                for i, (c, w) in enumerate(zip(row, widths, strict=True))
            )
        )
        if j == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


COMMANDS = {"roundtrip": bench_roundtrip, "map": bench_map, "cold": bench_cold}


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("command", choices=[*COMMANDS, "all"])
    ap.add_argument("--rounds", type=int, default=3, help="roundtrip/map: alternating rounds")
    ap.add_argument("--calls", type=int, default=2000, help="roundtrip: timed calls per round")
    ap.add_argument("--warmup", type=int, default=200, help="roundtrip: warm-up calls per round")
    ap.add_argument("--n", type=int, default=10**4, help="map: inputs per map")
    ap.add_argument("--samples", type=int, default=15, help="cold: samples per system")
    ap.add_argument(
        "--reps",
        type=int,
        default=3,
        help="cold: the samples are taken in this many alternating blocks",
    )
    ap.add_argument(
        "--settle",
        type=float,
        default=0.3,
        help="cold: seconds to wait after scale-to-zero before a sample",
    )
    ap.add_argument("--no-serve", action="store_true", help="cold: skip Ray Serve")
    ap.add_argument("--keep-home", action="store_true", help="keep the KETCH_HOME (logs)")
    ap.add_argument(
        "--ray-auth",
        choices=["disabled", "default"],
        default="disabled",
        help="Ray's per-RPC token authentication (default: off, Ray's faster setup)",
    )
    args = ap.parse_args()
    global RAY_AUTH
    RAY_AUTH = args.ray_auth

    info = machine_info()
    names = list(COMMANDS) if args.command == "all" else [args.command]
    results: dict[str, Any] = {}
    for name in names:
        log(f"== {name}")
        results[name] = COMMANDS[name](args)
    info["loadavg_end"] = loadavg()

    print()
    print(f"ketch core benchmarks, {info['date']}")
    print(machine_line(info, f"Ray auth {args.ray_auth}"))
    for name in names:
        print()
        print(results[name]["table"])
    path = save_result(
        f"core-{args.command}",
        {"command": " ".join(sys.argv), "args": vars(args), "machine": info, "results": results},
    )
    print(f"\nfull result: {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
