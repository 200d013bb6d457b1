"""The gateway's cost: one hello-world app served by bare uvicorn and through ketch's Gateway.

    .venv/bin/python bench/gateway_bench.py [--duration 5] [--concurrency 1,32]
                                            [--app asgi|fastapi] [--loadgen auto|wrk|python]

Targets, measured in one run by one load generator (wrk when installed, else the asyncio
one below, which also reaches unix sockets):
  bare-tcp       uvicorn on 127.0.0.1, clients connect to it directly (the baseline)
  bare-unix      uvicorn on a unix socket, directly (python load generator only)
  gateway        the Gateway on 127.0.0.1 in front of uvicorn on a unix socket
Every server is its own process: uvicorn with uvloop + httptools, no access log; the
gateway on uvloop, with a resolver that answers at once. Prints req/s, p50/p99 latency,
the CPU time per request of the server processes (gateway + uvicorn for the gateway row)
and the gateway/bare ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

# -- the app (imported by uvicorn from this file) -------------------------------------------

_BODY = b"Hello, world!"
_START = {
    "type": "http.response.start",
    "status": 200,
    "headers": [(b"content-type", b"text/plain"), (b"content-length", str(len(_BODY)).encode())],
}
_SEND_BODY = {"type": "http.response.body", "body": _BODY}


async def asgi_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """The smallest ASGI app: what the proxy adds shows most against it."""
    assert scope["type"] == "http"
    await send(_START)
    await send(_SEND_BODY)


def _fastapi_app() -> Any:
    from fastapi import FastAPI
    from fastapi.responses import PlainTextResponse

    app = FastAPI()

    @app.get("/", response_class=PlainTextResponse)
    async def hello() -> str:
        return "Hello, world!"

    return app


if os.environ.get("GATEWAY_BENCH_FASTAPI"):
    fastapi_app = _fastapi_app()

# -- the gateway process -------------------------------------------------------------------


def serve_gateway(address: str, port_file: str) -> None:
    import uvloop

    sys.path.insert(0, str(ROOT / "src"))
    from ketch._gateway.proxy import Gateway, RequestHead

    class Target:
        remove_headers: frozenset[bytes] = frozenset()

        def __init__(self, address: str) -> None:
            self.address = address

        def release(self, outcome: str) -> None:
            pass

    target = Target(address)

    async def resolver(head: RequestHead) -> Target:
        return target

    async def main() -> None:
        gateway = Gateway(resolver)
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        await gateway.serve(sock)
        Path(port_file).write_text(str(sock.getsockname()[1]))
        await asyncio.Event().wait()

    uvloop.run(main())


# -- load generators -----------------------------------------------------------------------


class Result:
    def __init__(self, rps: float, p50_us: float, p99_us: float) -> None:
        self.rps, self.p50_us, self.p99_us = rps, p50_us, p99_us


async def _client(address: str, stop_at: float, record_from: float, latencies: list[float]) -> None:
    if address.startswith("unix:"):
        reader, writer = await asyncio.open_unix_connection(address[5:])
    else:
        host, _, port = address.rpartition(":")
        reader, writer = await asyncio.open_connection(host, int(port))
    request = b"GET / HTTP/1.1\r\nHost: bench.localhost\r\n\r\n"
    clock = time.perf_counter
    try:
        while True:
            t0 = clock()
            if t0 >= stop_at:
                return
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            match = re.search(rb"(?i)\r\ncontent-length: *(\d+)", head)
            assert match is not None, head
            await reader.readexactly(int(match.group(1)))
            t1 = clock()
            if t0 >= record_from:
                latencies.append(t1 - t0)
    finally:
        writer.close()


async def _python_load(address: str, concurrency: int, duration: float, warmup: float) -> Result:
    start = time.perf_counter()
    latencies: list[float] = []
    await asyncio.gather(
        *(
            _client(address, start + warmup + duration, start + warmup, latencies)
            for _ in range(concurrency)
        )
    )
    latencies.sort()
    return Result(
        len(latencies) / duration,
        latencies[len(latencies) // 2] * 1e6,
        latencies[int(len(latencies) * 0.99)] * 1e6,
    )


def python_load(address: str, concurrency: int, duration: float, warmup: float) -> Result:
    import uvloop

    return uvloop.run(_python_load(address, concurrency, duration, warmup))


_UNITS = {"us": 1.0, "ms": 1e3, "s": 1e6}


def wrk_load(address: str, concurrency: int, duration: float, warmup: float) -> Result:
    url = f"http://{address}/"
    if warmup:
        subprocess.run(
            ["wrk", "-t1", f"-c{concurrency}", f"-d{max(1, round(warmup))}s", url],
            capture_output=True,
            check=True,
        )
    out = subprocess.run(
        ["wrk", "-t1", f"-c{concurrency}", f"-d{round(duration)}s", "--latency", url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]

    def pct(p: str) -> float:
        m = re.search(rf"^\s+{p}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        assert m is not None, out
        return float(m.group(1)) * _UNITS[m.group(2)]

    return Result(rps, pct("50"), pct("99"))


# -- the run -------------------------------------------------------------------------------


def _wait_connectable(address: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if address.startswith("unix:"):
                with socket.socket(socket.AF_UNIX) as s:
                    s.connect(address[5:])
            else:
                host, _, port = address.rpartition(":")
                socket.create_connection((host, int(port)), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _uvicorn(app: str, bind: list[str]) -> subprocess.Popen[bytes]:
    env = dict(os.environ)
    if app == "fastapi_app":
        env["GATEWAY_BENCH_FASTAPI"] = "1"
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            f"gateway_bench:{app}",
            "--app-dir",
            str(HERE),
            "--loop",
            "uvloop",
            "--http",
            "httptools",
            "--no-access-log",
            "--log-level",
            "warning",
            "--lifespan",
            "off",
            *bind,
        ],
        env=env,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--concurrency", default="1,32")
    parser.add_argument("--app", choices=["asgi", "fastapi"], default="asgi")
    parser.add_argument("--loadgen", choices=["auto", "wrk", "python"], default="auto")
    parser.add_argument(
        "--serve-gateway", nargs=2, metavar=("ADDRESS", "PORT_FILE"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.serve_gateway:
        serve_gateway(*args.serve_gateway)
        return

    loadgen = args.loadgen
    if loadgen == "auto":
        loadgen = "wrk" if shutil.which("wrk") else "python"
    load = wrk_load if loadgen == "wrk" else python_load
    app = "asgi_app" if args.app == "asgi" else "fastapi_app"
    levels = [int(c) for c in args.concurrency.split(",")]

    procs: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryDirectory(prefix="gwbench-") as tmp:
        try:
            tcp = f"127.0.0.1:{_free_port()}"
            uds = f"{tmp}/app.sock"
            procs.append(_uvicorn(app, ["--port", tcp.rpartition(":")[2]]))
            procs.append(_uvicorn(app, ["--uds", uds]))
            _wait_connectable(tcp)
            _wait_connectable(f"unix:{uds}")
            port_file = Path(tmp, "gateway.port")
            procs.append(
                subprocess.Popen(
                    [sys.executable, __file__, "--serve-gateway", f"unix:{uds}", str(port_file)]
                )
            )
            deadline = time.monotonic() + 20
            while not port_file.exists() or not port_file.read_text():
                assert time.monotonic() < deadline, "the gateway did not start"
                time.sleep(0.05)
            gateway = f"127.0.0.1:{port_file.read_text()}"
            _wait_connectable(gateway)

            uv_tcp, uv_unix, gw_proc = procs
            # The server processes each target keeps busy, for CPU time per request: a
            # steadier measure than req/s on a machine shared with other work.
            targets = {"bare-tcp": (tcp, [uv_tcp]), "gateway": (gateway, [gw_proc, uv_unix])}
            if loadgen == "python":
                targets["bare-unix"] = (f"unix:{uds}", [uv_unix])
            print(
                f"app={args.app} loadgen={loadgen} duration={args.duration:g}s "
                f"cpus={os.cpu_count()}"
            )
            print(
                f"{'target':<10} {'conc':>4} {'req/s':>9} {'p50 µs':>8} {'p99 µs':>8} "
                f"{'cpu µs/req':>22}"
            )
            for c in levels:
                results: dict[str, Result] = {}
                for name, (address, servers) in targets.items():
                    before = [_cpu_seconds(p.pid) for p in servers]
                    r = results[name] = load(address, c, args.duration, args.warmup)
                    spent = [_cpu_seconds(p.pid) - b for p, b in zip(servers, before, strict=True)]
                    # Warm-up requests are in the CPU time too: count them at the same rate.
                    n = r.rps * (args.duration + args.warmup)
                    cpu = " + ".join(f"{t / n * 1e6:.0f}" for t in spent)
                    print(
                        f"{name:<10} {c:>4} {r.rps:>9.0f} {r.p50_us:>8.0f} {r.p99_us:>8.0f} "
                        f"{cpu:>22}",
                        flush=True,
                    )
                bare, gw = results["bare-tcp"], results["gateway"]
                print(
                    f"{'ratio':<10} {c:>4} gateway/bare-tcp throughput "
                    f"{gw.rps / bare.rps:.2f}x, p50 added {gw.p50_us - bare.p50_us:+.0f} µs, "
                    f"p99 added {gw.p99_us - bare.p99_us:+.0f} µs",
                    flush=True,
                )
        finally:
            for proc in procs:
                proc.terminate()
            for proc in procs:
                try:
                    proc.wait(5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


if __name__ == "__main__":
    main()
