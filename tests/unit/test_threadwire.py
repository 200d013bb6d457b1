"""A channel that another thread writes frames on between its loop's own writes
(`_utils/threadwire.py`), over a real socket pair; and the one-thread executor of
one-input containers (`_runtime/direct.py`)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import socket
import struct
import threading
from typing import Any

import pytest

from ketch._runtime.direct import InputThread
from ketch._utils import wire
from ketch._utils.threadwire import ThreadWriteChannel, open_thread_channel


async def _pair() -> tuple[ThreadWriteChannel, wire.Channel, asyncio.Server]:
    accepted: asyncio.Future[wire.Channel] = asyncio.get_running_loop().create_future()

    async def on_conn(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        accepted.set_result(wire.server_channel(r, w, wire.MAX_FRAME))

    server = await asyncio.start_server(on_conn, "127.0.0.1", 0, limit=2**20)
    port = server.sockets[0].getsockname()[1]
    client = await open_thread_channel(f"127.0.0.1:{port}")
    return client, await accepted, server


async def _collect(b: wire.Channel, n: int) -> list[dict[str, Any]]:
    got: list[dict[str, Any]] = []
    while len(got) < n:
        got.extend(await b.recv())  # a broken frame would raise ChannelClosed here
    return got


@pytest.mark.parametrize("size", [10, 30_000, 60_000])
def test_frames_from_a_thread_and_the_loop_never_mix(size: int) -> None:
    """The thread's frames and the loop's go out whole, in any order between them, even
    when the socket takes only part of one (the receiver reads late)."""
    per_side = 300

    async def main() -> None:
        a, b, server = await _pair()
        loop = asyncio.get_running_loop()
        try:

            def from_thread() -> None:
                for i in range(per_side):
                    a.send_now(loop, {"t": "th", "i": i, "pad": b"t" * size})

            thread = threading.Thread(target=from_thread)
            thread.start()
            for i in range(per_side):
                a.send({"t": "lo", "i": i, "pad": b"l" * size})
                await asyncio.sleep(0)
            await asyncio.to_thread(thread.join)
            got = await _collect(b, 2 * per_side)
            for kind, fill in (("th", b"t"), ("lo", b"l")):
                mine = [m for m in got if m["t"] == kind]
                # Each side's own messages keep their order and their bytes.
                assert [m["i"] for m in mine] == list(range(per_side))
                assert all(m["pad"] == fill * size for m in mine)
        finally:
            a.close()
            b.close()
            server.close()

    asyncio.run(main())


async def _raw_pair() -> tuple[ThreadWriteChannel, socket.socket, socket.socket]:
    """The channel, and the peer's end as a plain blocking socket this test reads."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    port = listener.getsockname()[1]
    a = await open_thread_channel(f"127.0.0.1:{port}")
    peer, _ = listener.accept()
    return a, peer, listener


def _read_frames(peer: socket.socket, n: int, buf: bytes = b"") -> list[dict[str, Any]]:
    """`n` messages from the raw socket, after `buf` (bytes of it read already)."""
    out: list[dict[str, Any]] = []
    while len(out) < n:
        while len(buf) < 8 or len(buf) < 8 + struct.unpack(">Q", buf[:8])[0]:
            chunk = peer.recv(1 << 20)
            assert chunk, "the channel closed"
            buf += chunk
        size = struct.unpack(">Q", buf[:8])[0]
        out.extend(wire.decode(buf[8 : 8 + size]))  # ValueError if frames were mixed
        buf = buf[8 + size :]
    return out


def test_a_thread_does_not_write_while_the_loop_holds_part_of_a_frame() -> None:
    """The socket has room again, but the loop's transport still holds the rest of a
    large frame: a thread's frame must wait for it, not land in its middle."""

    async def main() -> None:
        a, peer, listener = await _raw_pair()
        try:
            a.send({"t": "big", "pad": b"b" * (8 << 20)})
            await asyncio.sleep(0.05)  # flushed: the socket took part, the transport the rest
            assert a._writer.transport.get_write_buffer_size() > 0
            taken = b""
            while len(taken) < 1 << 20:  # room in the socket, while the loop cannot run
                taken += peer.recv(1 << 20)
            assert a.write_now({"t": "small"}) is False
            a.send({"t": "small"})
            got = await asyncio.to_thread(_read_frames, peer, 2, taken)
            assert [m["t"] for m in got] == ["big", "small"]
        finally:
            a.close()
            peer.close()
            listener.close()

    asyncio.run(main())


def test_a_thread_message_does_not_pass_one_it_handed_to_the_loop() -> None:
    async def main() -> None:
        a, b, server = await _pair()
        loop = asyncio.get_running_loop()
        try:

            def from_thread() -> None:
                a.send_now(loop, {"t": "first", "pad": b"x" * 100_000})  # the loop sends it
                a.send_now(loop, {"t": "second"})

            from_thread()  # here, where the loop cannot run in between: the worst case
            got = await _collect(b, 2)
            assert [m["t"] for m in got] == ["first", "second"]
        finally:
            a.close()
            b.close()
            server.close()

    asyncio.run(main())


def test_a_message_over_the_limit_or_unencodable_is_left_to_the_loop() -> None:
    async def main() -> None:
        a, b, server = await _pair()
        refused: list[str] = []
        a.max_message = 1000
        a.on_refused = lambda msg, exc: refused.append(msg["t"])
        try:
            assert await asyncio.to_thread(a.write_now, {"t": "big", "pad": b"x" * 2000}) is False
            assert await asyncio.to_thread(a.write_now, {"t": "bad", "v": object()}) is False
            assert await asyncio.to_thread(a.write_now, {"t": "ok"}) is True
            assert [m["t"] for m in await b.recv()] == ["ok"]
            # Sent by the loop instead, which refuses the two as any channel does.
            loop = asyncio.get_running_loop()
            await asyncio.to_thread(a.send_now, loop, {"t": "big", "pad": b"x" * 2000})
            await asyncio.sleep(0.05)
            assert refused == ["big"]
        finally:
            a.close()
            b.close()
            server.close()

    asyncio.run(main())


def test_nothing_is_written_after_the_channel_closes() -> None:
    async def main() -> None:
        a, b, server = await _pair()
        try:
            a.close()
            assert await asyncio.to_thread(a.write_now, {"t": "late"}) is False
            with pytest.raises(wire.ChannelClosed):
                await b.recv()
        finally:
            b.close()
            server.close()

    asyncio.run(main())


def test_the_input_thread_runs_everything_in_order_on_one_thread() -> None:
    pool = InputThread()
    try:
        seen: list[tuple[str, int]] = []

        def record(i: int) -> int:
            seen.append(("submit", i))
            return i

        futs = [pool.submit(lambda i=i: record(i)) for i in range(3)]
        pool.post(lambda: seen.append(("post", 3)))
        last = pool.submit(threading.get_ident)
        assert [f.result(10) for f in futs] == [0, 1, 2]
        assert last.result(10) == pool.thread.ident
        assert seen == [("submit", 0), ("submit", 1), ("submit", 2), ("post", 3)]
        failing = pool.submit(lambda: 1 / 0)
        with pytest.raises(ZeroDivisionError):
            failing.result(10)
        # Still working after a failure.
        assert pool.submit(lambda: "alive").result(10) == "alive"
    finally:
        pool.shutdown(wait=True)
    assert not pool.thread.is_alive()
    with pytest.raises(RuntimeError):
        pool.submit(lambda: None)


def test_input_thread_shutdown_cancels_what_has_not_started() -> None:
    pool = InputThread()
    started, gate = threading.Event(), threading.Event()

    def block() -> bool:
        started.set()
        return gate.wait(10)

    running = pool.submit(block)
    assert started.wait(10)
    queued = [pool.submit(lambda: "never") for _ in range(3)]
    pool.shutdown(wait=False, cancel_futures=True)
    gate.set()
    assert running.result(10) is True
    for f in queued:
        with pytest.raises(concurrent.futures.CancelledError):
            f.result(10)
    pool.thread.join(10)
    assert not pool.thread.is_alive()
