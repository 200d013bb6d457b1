"""A call channel that a thread other than its event loop's may write one frame on.

The hot paths use it to skip a wake-up of the loop: the container's input thread sends a
sync call's result itself, and the SDK's caller thread sends a blocking `.remote()`'s call
itself. The loop goes on owning the connection: it reads every frame, and a thread writes
only while nothing of the loop's is waiting to go out (else the loop sends the message,
after what it holds), under a lock the loop's own writes take too, so frames never mix.

The thread writes on a duplicate of the socket's descriptor, closed with the channel: a
descriptor number the loop has closed and the process has reused can never be written.
"""

from __future__ import annotations

import asyncio
import os
import socket
import threading
import weakref
from collections.abc import Mapping
from typing import Any

import msgpack

from ketch._utils.wire import _HEADER, Channel, ChannelClosed, Message, _array_header

# Larger messages go through the loop's transport, which buffers what the socket does not
# take at once; a thread writing them itself could hold the write lock while the peer reads.
_DIRECT_MAX = 64 * 1024


class ThreadWriteChannel(Channel):
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        super().__init__(reader, writer)
        self._loop = asyncio.get_running_loop()
        # Held by the loop for a whole flush (its outbox is empty then, but not written)
        # and by a thread for its write; reentrant: a flush's `_write`, and a refusal's
        # callback that sends again, take it once more.
        self._wlock = threading.RLock()
        # The part of a thread's frame the socket did not take: the loop writes it next.
        self._tail = b""
        # Messages `send_now` handed to the loop, not in its outbox yet: a thread's later
        # message must not pass them.
        self._handoffs = 0
        self._thread_packer = msgpack.Packer()
        self._wfd = os.dup(writer.get_extra_info("socket").fileno())
        # Closes the duplicate once: on close, at end of stream, or when collected.
        self._release = weakref.finalize(self, os.close, self._wfd)

    def _flush(self) -> None:
        with self._wlock:
            super()._flush()

    def _write(self, parts: list[bytes], size: int) -> None:
        with self._wlock:
            self._write_tail()
            super()._write(parts, size)

    def _write_tail(self) -> None:
        """What a thread's frame left unwritten goes first (the loop's side, locked)."""
        if self._tail:
            tail, self._tail = self._tail, b""
            self._writer.write(tail)

    def _flush_tail(self) -> None:
        with self._wlock:
            self._write_tail()

    def send_now(self, loop: asyncio.AbstractEventLoop, msg: Mapping[str, Any]) -> None:
        """Send `msg` from this (non-loop) thread at once when nothing of the loop's waits
        to go out; otherwise, or for a message the channel might refuse, the loop sends
        it (and refuses it as usual, with its caller told)."""
        if self.write_now(msg):
            return
        with self._wlock:
            self._handoffs += 1
        loop.call_soon_threadsafe(self._send_handed, msg)

    def _send_handed(self, msg: Mapping[str, Any]) -> None:
        with self._wlock:
            self._handoffs -= 1
            # Into the outbox before the lock goes: the thread's next message waits for it.
            self.send(msg)

    def write_now(self, msg: Mapping[str, Any]) -> bool:
        """Write `msg` in a frame of its own from this thread; False (nothing written) when
        the loop must send it instead: something of the loop's waits to go out, or the
        message is large (the loop's transport buffers it; a thread would block on it)."""
        with self._wlock:
            transport = self._writer.transport
            # Bytes the loop still holds (a write the socket took in part, a flush due this
            # turn) go first: the loop sends this one after them.
            if (
                self.closed
                or not self._release.alive
                or self._outbox
                or self._tail
                or self._handoffs
                or transport.is_closing()
                or transport.get_write_buffer_size()
            ):
                return False
            try:
                data = self._thread_packer.pack(msg)
            except (TypeError, ValueError, OverflowError):
                self._thread_packer = msgpack.Packer()
                return False
            limit = self.max_message
            if len(data) > _DIRECT_MAX or (limit is not None and len(data) > limit):
                if len(data) > _DIRECT_MAX:
                    self._thread_packer = msgpack.Packer()  # it keeps the buffer it grew
                return False
            array = _array_header(1)
            frame = _HEADER.pack(len(array) + len(data)) + array + data
            try:
                n = os.write(self._wfd, frame)
            except BlockingIOError:
                n = 0
            except OSError:
                return True  # the peer is gone: the loop's reader sees it and acts on it
            if n < len(frame):
                # Never wait for the socket here: the peer may be waiting for this side's
                # loop to read, and the loop may wait for this lock. The loop's transport
                # buffers the rest and sends it before anything else.
                self._tail = frame[n:]
                self._loop.call_soon_threadsafe(self._flush_tail)
            return True

    async def recv(self) -> list[Message]:
        try:
            return await super().recv()
        except ChannelClosed:
            self._drop_duplicate()
            raise

    def close(self) -> None:
        self._flush_tail()
        self._drop_duplicate()
        super().close()

    def _drop_duplicate(self) -> None:
        with self._wlock:
            self._release()


async def open_thread_channel(addr: str) -> ThreadWriteChannel:
    """`wire.open_channel`, for a channel a thread may write on."""
    if addr.startswith("unix:"):
        reader, writer = await asyncio.open_unix_connection(addr[5:], limit=2**20)
    else:
        host, _, port = addr.rpartition(":")
        reader, writer = await asyncio.open_connection(host.strip("[]"), int(port), limit=2**20)
        sock = writer.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return ThreadWriteChannel(reader, writer)
