#!/usr/bin/env python
"""Gateway throughput with OpenTelemetry export off and on (O5), against the code before it.

    .venv/bin/python bench/tracing_bench.py [--baseline DIR] [--rounds 3] [--duration 5]
                                            [--concurrency 1,32]

Three ketch servers, up at once, each with its own KETCH_HOME, serving bench/bench_web_app.py's
warm `hello` endpoint (one container, max_inputs=100):
  baseline  the code of --baseline (a tree with src/ketch, e.g. `git archive` of the commit
            before tracing), which is what "off" must match;
  off       this tree, KETCH_OTEL_ENDPOINT unset;
  on        this tree, KETCH_OTEL_ENDPOINT set to an OTLP/HTTP sink (a process of its own
            that answers 200 and counts the spans' bytes), default batch settings.
Load: an asyncio keep-alive load generator (every answer checked to be a 200) at each concurrency,
--duration seconds after a 1 s warm-up; rounds rotate the order of the three. Prints req/s
and p50/p99 (median of the rounds), the server process's CPU time per request, and the
off/baseline and on/off ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))


def _sink(port_file: str) -> None:
    """An OTLP/HTTP endpoint that accepts everything (the "on" server exports to it)."""
    posts = {"n": 0, "bytes": 0}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length") or 0))
            posts["n"] += 1
            posts["bytes"] += len(body)
            self.send_response(200)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    Path(port_file).write_text(str(server.server_address[1]))
    try:
        server.serve_forever()
    finally:
        print(json.dumps(posts), file=sys.stderr)


def _serve() -> None:
    """One variant's server with the endpoint deployed; prints its address and server pid,
    then waits for a line on stdin."""
    import bench_web_app as w

    import ketch

    with w.web_app.run(show_logs=False):
        url = w.hello.get_web_url()
        assert url is not None
        home = Path(os.environ["KETCH_HOME"])
        pid = json.loads((home / "server.json").read_text())["pid"]
        print(
            json.dumps({"address": url.split("//", 1)[1], "pid": pid, "ketch": ketch.__file__}),
            flush=True,
        )
        sys.stdin.readline()


async def _client(
    host: str,
    port: int,
    stop_at: float,
    record_from: float,
    latencies: list[float],
    statuses: dict[bytes, int],
) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    request = f"GET / HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode()
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
                status = head[9:12]
                statuses[status] = statuses.get(status, 0) + 1
    finally:
        writer.close()


def load(address: str, concurrency: int, duration: float, warmup: float) -> dict[str, float]:
    """Keep-alive GETs from `concurrency` connections; every answer must be a 200."""
    import uvloop

    host, _, port = address.rpartition(":")

    async def run() -> dict[str, float]:
        start = time.perf_counter()
        latencies: list[float] = []
        statuses: dict[bytes, int] = {}
        await asyncio.gather(
            *(
                _client(
                    host, int(port), start + warmup + duration, start + warmup, latencies, statuses
                )
                for _ in range(concurrency)
            )
        )
        assert set(statuses) == {b"200"}, statuses
        latencies.sort()
        return {
            "rps": len(latencies) / duration,
            "p50_us": latencies[len(latencies) // 2] * 1e6,
            "p99_us": latencies[int(len(latencies) * 0.99)] * 1e6,
        }

    return uvloop.run(run())


def _cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--baseline", default="/work/baseline_otel")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--concurrency", default="1,32")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--sink", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        return _serve()
    if args.sink:
        return _sink(args.sink)
    baseline_src = Path(args.baseline) / "src"
    if not (baseline_src / "ketch").is_dir():
        raise SystemExit(f"--baseline {args.baseline}: no src/ketch there")
    tmp = Path(tempfile.mkdtemp(prefix="ketch-tracing-bench-"))
    procs: list[subprocess.Popen[str]] = []
    servers: dict[str, dict[str, Any]] = {}
    try:
        port_file = tmp / "sink.port"
        sink = subprocess.Popen(
            [sys.executable, __file__, "--sink", str(port_file)], stderr=subprocess.PIPE, text=True
        )
        procs.append(sink)
        while not port_file.exists() or not port_file.read_text():
            time.sleep(0.05)
        sink_url = f"http://127.0.0.1:{port_file.read_text()}"
        variants = {
            "baseline": (baseline_src, {}),
            "off": (ROOT / "src", {}),
            "on": (ROOT / "src", {"KETCH_OTEL_ENDPOINT": sink_url}),
        }
        for name, (src, extra) in variants.items():
            env = {k: v for k, v in os.environ.items() if not k.startswith(("KETCH_", "OTEL_"))}
            # No rate limit: the bench measures the path, not the token bucket.
            env.update(
                extra,
                KETCH_HOME=str(tmp / name),
                KETCH_GATEWAY_PORT="0",
                KETCH_RATE_LIMIT="1e9",
                KETCH_RATE_BURST="1000000000",
                PYTHONPATH=f"{src}{os.pathsep}{HERE}",
            )
            proc = subprocess.Popen(
                [sys.executable, __file__, "--serve"],
                env=env,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            procs.append(proc)
            assert proc.stdout is not None
            servers[name] = {**json.loads(proc.stdout.readline()), "proc": proc}
            assert servers[name]["ketch"].startswith(str(src)), servers[name]
        levels = [int(c) for c in args.concurrency.split(",")]
        names = list(variants)
        runs: dict[tuple[str, int], list[dict[str, float]]] = {}
        for r in range(args.rounds):
            order = names[r % 3 :] + names[: r % 3]
            for name in order:
                s = servers[name]
                for c in levels:
                    cpu0 = _cpu(s["pid"])
                    res = load(s["address"], c, args.duration, args.warmup)
                    cpu = _cpu(s["pid"]) - cpu0
                    requests = res["rps"] * (args.duration + args.warmup)
                    runs.setdefault((name, c), []).append(
                        {**res, "server_cpu_us": cpu / max(requests, 1) * 1e6}
                    )
        print(
            f"{'variant':10} {'conc':>4} {'req/s':>9} {'p50 us':>8} {'p99 us':>8} "
            f"{'server cpu us/req':>18}   rounds req/s"
        )
        for c in levels:
            for name in names:
                rs = runs[(name, c)]
                med = {k: statistics.median(x[k] for x in rs) for k in rs[0]}
                print(
                    f"{name:10} {c:>4} {med['rps']:>9.0f} {med['p50_us']:>8.0f} "
                    f"{med['p99_us']:>8.0f} {med['server_cpu_us']:>18.0f}   "
                    + " ".join(f"{x['rps']:.0f}" for x in rs)
                )
            rps = {n: statistics.median(x["rps"] for x in runs[(n, c)]) for n in names}
            print(
                f"  concurrency {c}: off/baseline {rps['off'] / rps['baseline']:.3f}, "
                f"on/off {rps['on'] / rps['off']:.3f}"
            )
    finally:
        for s in servers.values():
            with contextlib.suppress(Exception):
                s["proc"].stdin.write("\n")
                s["proc"].stdin.flush()
                s["proc"].wait(60)
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(10)
        if sink.stderr is not None:
            print("sink received:", sink.stderr.read().strip())
        # The servers that `app.run()` started outlive their drivers: stopped by pid.
        for s in servers.values():
            with contextlib.suppress(ProcessLookupError):
                os.kill(s["pid"], signal.SIGTERM)


if __name__ == "__main__":
    main()
