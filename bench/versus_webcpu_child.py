"""The child of `versus.py webcpu`: web load at one concurrency through the gateway, and the
CPU that the server with its containers (the server's process tree, read from /proc) and
the load generator spend per request. Run with PYTHONPATH selecting the tree under test.

    versus_webcpu_child.py DURATION CONCURRENCY   (prints one JSON line)
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
import time
import urllib.request
from urllib.parse import urlsplit

sys.path.insert(0, os.environ["BENCH_DIR"])

from bench_web_app import hello, web_app

from ketch._client.discovery import read_server
from ketch.config import Config

HZ = os.sysconf("SC_CLK_TCK")


def tree_cpu(root: int) -> float:
    """CPU seconds (user + system) of `root` and every process under it."""
    kids: dict[int, list[int]] = {}
    cpu: dict[int, float] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                stat = fh.read()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        cpu[int(entry)] = (int(fields[11]) + int(fields[12])) / HZ
        kids.setdefault(int(fields[1]), []).append(int(entry))
    total, todo = 0.0, [root]
    while todo:
        pid = todo.pop()
        total += cpu.get(pid, 0.0)
        todo += kids.get(pid, [])
    return total


async def client(port: int, host: str, stop_at: float, done: list[int]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    req = f"GET / HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()
    while time.perf_counter() < stop_at:
        writer.write(req)
        head = await reader.readuntil(b"\r\n\r\n")
        length = re.search(rb"(?i)\r\ncontent-length: *(\d+)", head)
        assert head.startswith(b"HTTP/1.1 200") and length is not None, head[:200]
        await reader.readexactly(int(length.group(1)))
        done.append(1)
    writer.close()


async def load(url: str, seconds: float, concurrency: int) -> int:
    parts = urlsplit(url)
    assert parts.port is not None
    done: list[int] = []
    stop = time.perf_counter() + seconds
    await asyncio.gather(
        *(client(parts.port, parts.netloc, stop, done) for _ in range(concurrency))
    )
    return len(done)


def main() -> None:
    import uvloop

    duration, concurrency = float(sys.argv[1]), int(sys.argv[2])
    with web_app.run(show_logs=False):
        url = hello.get_web_url()
        assert url is not None
        for _ in range(600):
            try:
                urllib.request.urlopen(url, timeout=5).read()
                break
            except OSError:
                time.sleep(0.1)
        uvloop.run(load(url, 2.0, concurrency))  # warm
        info = read_server(Config.load())
        assert info is not None and info.pid is not None
        s0, c0, t0 = tree_cpu(info.pid), time.process_time(), time.perf_counter()
        n = uvloop.run(load(url, duration, concurrency))
        dt = time.perf_counter() - t0
        s1, c1 = tree_cpu(info.pid), time.process_time()
    result = {"rate": n / dt, "server_us": (s1 - s0) / n * 1e6, "client_us": (c1 - c0) / n * 1e6}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
