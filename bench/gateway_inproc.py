#!/usr/bin/env python
"""CPU time per request through ketch's Gateway, with client, gateway and upstream in one
process on one uvloop loop, so that `time.process_time()` counts just this work and other
processes on a shared machine disturb it less than wall-clock figures.

    .venv/bin/python bench/gateway_inproc.py [--requests 20000] [--concurrency 1]

It measures whatever `ketch` is importable. To compare two versions of the gateway, export
the older one (`git archive <commit> src | tar -x -C /tmp/old`) and alternate runs with
`PYTHONPATH=/tmp/old/src` and without, pinned to one CPU (`taskset -c 1`); compare the
medians of many alternating runs, since single runs vary by ±20 % on a busy machine.
Prints CPU µs per request, then wall µs per request.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import tempfile
import time
from typing import cast

import uvloop

from ketch._gateway.proxy import Gateway, Limits, RequestHead

_BODY = b"Hello, world!"
_RESPONSE = b"HTTP/1.1 200 OK\r\ncontent-length: 13\r\ncontent-type: text/plain\r\n\r\n" + _BODY


class _Upstream(asyncio.Protocol):
    """A minimal HTTP/1.1 server: one fixed response per request head."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.buf = b""

    def data_received(self, data: bytes) -> None:
        self.buf += data
        heads = self.buf.count(b"\r\n\r\n")
        if heads:
            self.buf = self.buf[self.buf.rindex(b"\r\n\r\n") + 4 :]
            self.transport.write(_RESPONSE * heads)


class _Target:
    def __init__(self, address: str) -> None:
        self.address = address
        self.remove_headers: frozenset[bytes] = frozenset()

    def release(self, outcome: str) -> None:
        pass


class _Client(asyncio.Protocol):
    """Sends the next request as each response arrives, until `n` have."""

    def __init__(self, n: int, done: asyncio.Future[None]) -> None:
        self.n = n
        self.done = done
        self.seen = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.send()

    def send(self) -> None:
        self.transport.write(b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n")

    def data_received(self, data: bytes) -> None:
        got = data.count(_BODY)
        self.seen += got
        if self.seen >= self.n:
            if not self.done.done():
                self.done.set_result(None)
        else:
            for _ in range(got):
                self.send()


async def _run(requests: int, concurrency: int) -> tuple[float, float]:
    loop = asyncio.get_running_loop()
    path = os.path.join(tempfile.mkdtemp(prefix="ketch-inproc-"), "up.sock")
    upstream = await loop.create_unix_server(_Upstream, path)
    target = _Target("unix:" + path)

    async def resolver(head: RequestHead) -> _Target:
        return target

    gateway = Gateway(resolver, Limits())
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    await gateway.serve(sock)

    async def load(per_connection: int) -> None:
        waits = []
        for _ in range(concurrency):
            done: asyncio.Future[None] = loop.create_future()
            waits.append(done)
            await loop.create_connection(
                lambda d=done: _Client(per_connection, d), "127.0.0.1", port
            )
        await asyncio.gather(*waits)

    await load(200)  # warm-up: connections to the upstream pooled, code paths hot
    cpu0, wall0 = time.process_time(), time.perf_counter()
    await load(requests // concurrency)
    cpu1, wall1 = time.process_time(), time.perf_counter()
    await gateway.close()
    upstream.close()
    os.unlink(path)
    n = requests // concurrency * concurrency
    return (cpu1 - cpu0) / n * 1e6, (wall1 - wall0) / n * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=20000)
    ap.add_argument("--concurrency", type=int, default=1)
    args = ap.parse_args()
    cpu, wall = uvloop.run(_run(args.requests, args.concurrency))
    print(f"{cpu:.2f} {wall:.2f}")


if __name__ == "__main__":
    main()
