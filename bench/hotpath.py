#!/usr/bin/env python
"""Where a ketch call's time goes: CPU per call in each process of the path, and profiles.

    .venv/bin/python bench/hotpath.py roundtrip [--calls 5000]
    .venv/bin/python bench/hotpath.py map [--n 20000]
    .venv/bin/python bench/hotpath.py cold [--samples 10]
    add --py-spy DIR to record a py-spy profile (collapsed stacks) of each process

roundtrip/map: runs the calls against warm containers and reports, per call, the wall time
and the CPU time that the client process, the server and the container(s) spent (from
/proc, so it counts every thread, C code and the kernel's share for the process). Wall time
not covered by CPU on the critical path is waiting: thread and process wake-ups.

cold: runs the container's start-up (the image's interpreter, `-X importtime`) and reports
what it imports and how long that takes; and the phases of real cold starts.

This is an analysis tool for docs/benchmarks.md; the comparison with Ray is bench/core.py.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

import core  # noqa: E402  (bench/core.py: the Ketch helper)

TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """user+system CPU of a process, all threads, from /proc (10 ms ticks)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def container_pids(home: Path) -> list[int]:
    marker = str(home).encode()
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes()
            env = (entry / "environ").read_bytes()
        except OSError:
            continue
        if b"ketch._runtime" in cmd and marker in env:
            out.append(int(entry.name))
    return out


@contextlib.contextmanager
def pyspy(out_dir: Path | None, pids: dict[str, int], seconds: float) -> Any:
    procs = []
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        spy = str(Path(sys.executable).with_name("py-spy"))
        for name, pid in pids.items():
            procs.append(
                subprocess.Popen(
                    [
                        spy,
                        "record",
                        "--pid",
                        str(pid),
                        "--rate",
                        "250",
                        "--format",
                        "raw",
                        "--threads",
                        "--duration",
                        str(int(seconds) + 1),
                        "--nonblocking",
                        "-o",
                        str(out_dir / f"{name}.txt"),
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
        time.sleep(1.0)
    try:
        yield
    finally:
        for p in procs:
            p.wait()


def measure(
    k: core.Ketch, run: Any, units: int, spy_dir: Path | None, expected_seconds: float
) -> dict[str, Any]:
    server_pid = int(k.status()["pid"])
    conts = container_pids(k.home)
    pids = {"client": os.getpid(), "server": server_pid}
    pids.update({f"container{i}": p for i, p in enumerate(conts)})
    with pyspy(spy_dir, pids, expected_seconds):
        before = {n: cpu_seconds(p) for n, p in pids.items()}
        t = time.perf_counter()
        run()
        wall = time.perf_counter() - t
        after = {n: cpu_seconds(p) for n, p in pids.items()}
    per_unit = {n: (after[n] - before[n]) / units * 1e6 for n in pids}
    return {
        "wall_us_per_unit": wall / units * 1e6,
        "cpu_us_per_unit": per_unit,
        "cpu_total_us_per_unit": sum(per_unit.values()),
        "loadavg": core.loadavg(),
    }


def show(title: str, res: dict[str, Any]) -> None:
    print(f"\n{title}")
    print(f"  wall per call           {res['wall_us_per_unit']:8.0f} us")
    for name, us in res["cpu_us_per_unit"].items():
        print(f"  CPU {name:20s}{us:8.0f} us")
    print(
        f"  CPU all processes       {res['cpu_total_us_per_unit']:8.0f} us"
        f"   (load average {res['loadavg']})"
    )


def do_roundtrip(args: argparse.Namespace) -> None:
    import bench_app

    with core.ketch_app(bench_app.rt_app, False) as k:
        bench_app.rt_echo.remote(0)
        k.wait_ready(bench_app.rt_app.app_id, 1)
        core.timed_calls(bench_app.rt_echo.remote, 500)
        lat: list[float] = []
        res = measure(
            k,
            lambda: lat.extend(core.timed_calls(bench_app.rt_echo.remote, args.calls)),
            args.calls,
            args.py_spy,
            args.calls * 0.002,
        )
        res["p50_us"] = core.pct(lat, 50)
        show(f"warm .remote(), {args.calls} sequential calls (p50 {res['p50_us']:.0f} us)", res)


def do_map(args: argparse.Namespace) -> None:
    import bench_app

    with core.ketch_app(bench_app.map_app, False) as k:
        bench_app.map_echo.remote(0)
        k.wait_ready(bench_app.map_app.app_id, 2)
        list(bench_app.map_echo.map(range(1000)))
        res = measure(
            k,
            lambda: list(bench_app.map_echo.map(range(args.n))),
            args.n,
            args.py_spy,
            args.n * 0.001,
        )
        show(
            f".map over {args.n} inputs, 2 containers "
            f"({1e6 / res['wall_us_per_unit']:.0f} inputs/s)",
            res,
        )


def do_cold(args: argparse.Namespace) -> None:
    import bench_app

    with core.ketch_app(bench_app.cold_app, False) as k:
        bench_app.cold_probe.remote(-1)
        images = sorted((k.home / "images").glob("*/venv/bin/python"))
        # The server's private copy of the ketch runtime (layout: runtime/<hash>/core, or
        # runtime/<hash> in older trees); containers get it on PYTHONPATH or from a .pth.
        rt = sorted((k.home / "runtime").glob("*"))[0]
        runtime = rt / "core" if (rt / "core").is_dir() else rt
        source = sorted((k.home / "sources").glob("*"))[0]
        py = str(images[0])
        env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": f"{runtime}:{source}"}
        # 1. The bare interpreter of the image, then what the runtime adds.
        for label, code in (
            ("bare interpreter (python -c pass)", "pass"),
            ("+ import ketch._runtime.entry", "import ketch._runtime.entry"),
            (
                "+ import bench_app (user module, imports ketch)",
                "import ketch._runtime.entry, bench_app",
            ),
        ):
            times = []
            for _ in range(args.samples):
                t = time.perf_counter()
                subprocess.run([py, "-c", code], env=env, check=True)
                times.append((time.perf_counter() - t) * 1e3)
            print(
                f"{label:55s} median {statistics.median(times):6.0f} ms "
                f"[{min(times):.0f}-{max(times):.0f}]"
            )
        # 2. The biggest imports (cumulative, us) of a container's start-up.
        proc = subprocess.run(
            [
                py,
                "-X",
                "importtime",
                "-c",
                "import ketch._runtime.entry, "
                "bench_app; from ketch.compat.shim import install_modal_alias",
            ],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        rows = []
        for line in proc.stderr.splitlines():
            m = re.match(r"import time:\s+(\d+) \|\s+(\d+) \|(\s*)(\S+)", line)
            if m:
                rows.append((int(m.group(2)), (len(m.group(3)) - 1) // 2, m.group(4)))
        print(f"\nimports of a container's start-up: {len(rows)} modules")
        for cum, depth, name in sorted(rows, reverse=True)[: args.top]:
            print(f"  {cum / 1e3:7.1f} ms cumulative  {'  ' * min(depth, 4)}{name}")
        # 3. Real cold starts, in phases.
        print()
        phases: dict[str, list[float]] = {}
        for i in range(args.samples):
            k.wait_none(bench_app.cold_app.app_id)
            time.sleep(0.3)
            t0 = time.time()
            _, st = bench_app.cold_probe.remote(i)
            t1 = time.time()
            for name, v in (
                ("total", t1 - t0),
                ("to process start", st["process_start"] - t0),
                ("process start -> user module imported", st["imported"] - st["process_start"]),
                ("user module imported -> function called", st["called"] - st["imported"]),
                ("function called -> result in client", t1 - st["called"]),
            ):
                phases.setdefault(name, []).append(v * 1e3)
        for name, vs in phases.items():
            print(
                f"cold start: {name:42s} median {statistics.median(vs):6.1f} ms "
                f"[{min(vs):.1f}-{max(vs):.1f}]"
            )
    # 4. What a fork server would pay instead: fork a process that has ketch and the runtime
    # imported, until the child runs.
    import socket

    import ketch._runtime.entry  # noqa: F401

    a, b = socket.socketpair()
    forks = []
    for _ in range(30):
        t = time.perf_counter()
        pid = os.fork()
        if pid == 0:
            b.send(b"x")
            os._exit(0)
        a.recv(1)
        forks.append((time.perf_counter() - t) * 1e3)
        os.waitpid(pid, 0)
    print(
        f"fork of a process with the runtime imported, until the child runs: median "
        f"{statistics.median(forks):.1f} ms [{min(forks):.1f}-{max(forks):.1f}]"
    )


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("command", choices=["roundtrip", "map", "cold"])
    ap.add_argument("--calls", type=int, default=5000)
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--samples", type=int, default=10)
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--py-spy", type=Path, default=None, metavar="DIR")
    args = ap.parse_args()
    print(f"nproc {core.NPROC}, load average {core.loadavg()}")
    {"roundtrip": do_roundtrip, "map": do_map, "cold": do_cold}[args.command](args)


if __name__ == "__main__":
    main()
