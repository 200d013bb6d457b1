"""Frames and write coalescing of the call protocol, over a real socket pair."""

from __future__ import annotations

import asyncio
import struct

import pytest

from ketch._utils.wire import Channel, ChannelClosed


async def _pair() -> tuple[Channel, Channel, asyncio.AbstractServer]:
    accepted: asyncio.Future[Channel] = asyncio.get_running_loop().create_future()

    async def on_conn(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        accepted.set_result(Channel(r, w))

    server = await asyncio.start_server(on_conn, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    from ketch._utils.wire import open_channel

    client = await open_channel(f"127.0.0.1:{port}")
    return client, await accepted, server


def test_messages_sent_in_one_turn_share_a_frame() -> None:
    async def main() -> None:
        a, b, server = await _pair()
        for i in range(100):
            a.send({"t": "x", "i": i})
        batch = await b.recv()
        assert [m["i"] for m in batch] == list(range(100))
        a.send({"t": "y"})
        await asyncio.sleep(0)
        a.send({"t": "z"})
        got = []
        while len(got) < 2:
            got.extend(m["t"] for m in await b.recv())
        assert got == ["y", "z"]
        a.close()
        with pytest.raises(ChannelClosed):
            await b.recv()
        server.close()

    asyncio.run(main())


def test_oversized_frame_length_is_refused() -> None:
    async def main() -> None:
        a, b, server = await _pair()
        a._writer.write(struct.pack(">Q", 2**62))
        with pytest.raises(ChannelClosed):
            await b.recv()
        a.close()
        server.close()

    asyncio.run(main())
