"""Frames and write coalescing of the call protocol, over a real socket pair."""

from __future__ import annotations

import asyncio
import os
import pickle
import struct
from pathlib import Path
from typing import Any

import msgpack
import pytest

from ketch._utils import wire
from ketch._utils.wire import Channel, ChannelClosed, MessageTooLarge, decode, encode_frame


async def _pair(max_frame: int = wire.MAX_FRAME) -> tuple[Channel, Channel, asyncio.Server]:
    accepted: asyncio.Future[Channel] = asyncio.get_running_loop().create_future()

    async def on_conn(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        accepted.set_result(wire.server_channel(r, w, max_frame))

    server = await asyncio.start_server(on_conn, "127.0.0.1", 0, limit=2**20)
    port = server.sockets[0].getsockname()[1]
    client = await wire.open_channel(f"127.0.0.1:{port}")
    return client, await accepted, server


def _run(body: Any) -> None:
    async def main() -> None:
        a, b, server = await _pair()
        try:
            await body(a, b)
        finally:
            a.close()
            b.close()
            server.close()

    asyncio.run(main())


def test_messages_sent_in_one_turn_share_a_frame() -> None:
    async def body(a: Channel, b: Channel) -> None:
        for i in range(100):
            a.send({"t": "x", "i": i})
        batch = await b.recv()
        assert [m["i"] for m in batch] == list(range(100))
        a.send({"t": "y"})
        await asyncio.sleep(0)
        a.send({"t": "z"})
        got: list[Any] = []
        while len(got) < 2:
            got.extend(m["t"] for m in await b.recv())
        assert got == ["y", "z"]
        a.close()
        with pytest.raises(ChannelClosed):
            await b.recv()

    _run(body)


def test_a_large_turn_is_split_into_bounded_frames_in_order() -> None:
    async def body(a: Channel, b: Channel) -> None:
        chunk = b"x" * 1000
        n = 3 * wire.FRAME_TARGET // 1000
        for i in range(n):
            a.send({"t": "x", "i": i, "data": chunk})
        got: list[int] = []
        frames = 0
        while len(got) < n:
            got.extend(m["i"] for m in await b.recv())
            frames += 1
        assert got == list(range(n))
        assert frames >= 3

    _run(body)


def test_payloads_stay_bytes_and_a_big_one_arrives_whole() -> None:
    big = os.urandom(1024) * (40 * 1024)  # 40 MiB: read in pieces, in a frame of its own

    async def body(a: Channel, b: Channel) -> None:
        a.send({"t": "small", "payload": b"\x00\x01"})
        a.send({"t": "big", "payload": big, "error": {"exc": None, "repr": "r", "tb": ""}})
        a.send({"t": "after", "pair": (1, 2), "n": None})
        got: list[dict[str, Any]] = []
        while len(got) < 3:
            got.extend(await b.recv())
        assert [m["t"] for m in got] == ["small", "big", "after"]
        assert got[0]["payload"] == b"\x00\x01"
        assert type(got[1]["payload"]) is bytes and got[1]["payload"] == big
        assert got[2]["pair"] == [1, 2]  # msgpack has no tuples: they come back as lists

    _run(body)


def test_a_frame_declared_over_the_cap_closes_the_channel_unread() -> None:
    async def main() -> None:
        a, b, server = await _pair(max_frame=1024)
        a._writer.write(struct.pack(">Q", 2**62))
        with pytest.raises(ChannelClosed, match="over the limit"):
            await b.recv()
        assert b.closed
        with pytest.raises(ChannelClosed):  # the sender sees the connection go
            await a.recv()
        a.close()
        server.close()

    asyncio.run(main())


class _Touch:
    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.mkdir, (str(self.path),))


def test_a_pickle_frame_is_never_unpickled(tmp_path: Path) -> None:
    marker = tmp_path / "ran"

    async def body(a: Channel, b: Channel) -> None:
        data = pickle.dumps([{"t": "hello", "x": _Touch(marker)}])
        a._writer.write(struct.pack(">Q", len(data)) + data)
        with pytest.raises(ChannelClosed, match="malformed"):
            await b.recv()
        assert b.closed

    _run(body)
    assert not marker.exists()


def test_messages_the_peer_would_refuse_are_handed_back_not_sent() -> None:
    async def body(a: Channel, b: Channel) -> None:
        refused: list[tuple[str, Exception]] = []
        a.max_message = 10_000
        a.on_refused = lambda msg, exc: refused.append((msg["t"], exc))
        a.send({"t": "ok1"})
        a.send({"t": "huge", "payload": b"x" * 20_000})
        a.send({"t": "odd", "value": {1, 2}})  # a set: msgpack cannot carry it
        a.send({"t": "ok2"})
        got: list[str] = []
        while len(got) < 2:
            got.extend(m["t"] for m in await b.recv())
        assert got == ["ok1", "ok2"]
        assert [t for t, _ in refused] == ["huge", "odd"]
        too_large = refused[0][1]
        assert isinstance(too_large, MessageTooLarge) and too_large.limit == 10_000
        assert isinstance(refused[1][1], TypeError)

    _run(body)


def test_decode_takes_only_a_list_of_maps() -> None:
    assert decode(msgpack.packb([{"t": "x", 1: "int keys are fine"}])) == [
        {"t": "x", 1: "int keys are fine"}
    ]
    for bad in (
        msgpack.packb({"t": "x"}),
        msgpack.packb([1]),
        b"\xc1",
        b"\x92\x80",
        msgpack.packb([{"t": "x"}]) + b"extra",
    ):
        with pytest.raises(ValueError):
            decode(bad)
    frame = encode_frame([{"t": "hello"}])
    assert struct.unpack(">Q", frame[:8])[0] == len(frame) - 8


def test_container_transports_read_in_heap_sized_pieces() -> None:
    # 256 KiB reads (asyncio's default) each cost an mmap/munmap pair in a container that
    # never freed a larger block: the runtime lowers them below glibc's mmap threshold.
    from asyncio import selector_events

    from ketch._utils import wire

    cls = selector_events._SelectorSocketTransport  # type: ignore[attr-defined]
    before = cls.max_size
    try:
        wire.heap_sized_reads()
        assert cls.max_size == 64 * 1024 < 128 * 1024
    finally:
        cls.max_size = before
