"""Framed message channel used by the call protocol (SDK <-> server <-> containers).

A frame is an 8-byte big-endian length followed by a msgpack array of messages: plain
dicts whose "t" key names the kind (their types are in `ketch._utils.protocol.messages`).
Nothing on this channel is ever unpickled; user values (arguments, results, exceptions)
travel as opaque bytes inside messages and only the SDK and the containers turn them back
into objects.

Sends queued within one event-loop turn share a frame (up to `FRAME_TARGET` bytes), which
is what batches `.map` traffic under load without extra latency when idle. A message
larger than that goes in a frame of its own.

The receiver caps the frames it accepts (`max_frame`, per peer kind: a peer that has not
said hello yet gets a small cap) and closes a peer that declares more without reading the
body. A large frame is read in bounded pieces, so memory grows with the bytes that have
actually arrived, never with what a peer declares.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import msgpack

# A message as received, and as sent: any of the TypedDicts of the protocol is a Mapping.
Message = dict[str, Any]
Outgoing = Mapping[str, Any]

log = logging.getLogger("ketch.wire")

_HEADER = struct.Struct(">Q")
# What a channel accepts from a peer it trusts (the server, as seen by the SDK and by
# containers); the server sets a tighter cap per peer kind.
MAX_FRAME = 8 * 1024**3
# Small messages sent in one loop turn share frames up to this size.
FRAME_TARGET = 256 * 1024
# Frames up to this size are read in one go; larger ones in pieces of it.
_READ_PIECE = 1024 * 1024
# Below this, a frame is written as one buffer (one system call); above, its parts are
# handed to the transport as they are, so that a large payload is not copied once more.
_COALESCE = 64 * 1024
# A packer that has grown its buffer past this for one message is replaced.
_PACKER_KEEP = 1024 * 1024
# Pause the sender when this many bytes wait in the transport, so a fast producer cannot
# grow memory without bound.
_HIGH_WATER = 4 * 1024 * 1024

# A message the channel could not send: (message, why). The callback fails the call or the
# request the message belonged to, so that its caller gets an error instead of a hang.
Refused = Callable[[Outgoing, Exception], None]


class ChannelClosed(Exception):
    """The peer went away, or broke the framing (the channel is closed then)."""


class MessageTooLarge(ValueError):
    """A message is over the size the receiving side accepts."""

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"{size} bytes encoded, over the limit of {limit}")
        self.size = size
        self.limit = limit


def _array_header(n: int) -> bytes:
    if n < 16:
        return bytes((0x90 | n,))
    if n < 1 << 16:
        return b"\xdc" + n.to_bytes(2, "big")
    return b"\xdd" + n.to_bytes(4, "big")


def decode(body: bytes | bytearray) -> list[Message]:
    """The messages of one frame body; ValueError if it is not a msgpack array of maps."""
    try:
        batch = msgpack.unpackb(body, raw=False, strict_map_key=False)
    except Exception as exc:  # msgpack raises several types for malformed input
        raise ValueError(f"not a msgpack frame ({type(exc).__name__})") from None
    if not isinstance(batch, list) or not all(isinstance(m, dict) for m in batch):
        raise ValueError("a frame must hold a list of messages")
    return batch


def encode_frame(messages: Sequence[Outgoing]) -> bytes:
    """One frame (header included) holding `messages`; for tests and tools."""
    body: bytes = msgpack.packb(messages)
    return _HEADER.pack(len(body)) + body


class Channel:
    """Message framing and write coalescing over an asyncio stream pair."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        max_frame: int = MAX_FRAME,
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._outbox: list[Outgoing] = []
        self._flush_scheduled = False
        self._packer = msgpack.Packer()
        self.closed = False
        # Largest frame accepted from the peer.
        self.max_frame = max_frame
        # Largest message the peer accepts (it says so when the connection is set up);
        # a larger one is not sent but handed to `on_refused`.
        self.max_message: int | None = None
        self.on_refused: Refused | None = None
        writer.transport.set_write_buffer_limits(high=_HIGH_WATER)

    @property
    def peer(self) -> Any:
        return self._writer.get_extra_info("peername")

    def send(self, msg: Outgoing) -> None:
        """Queue a message; it goes out at the end of this loop turn with its neighbours."""
        if self.closed:
            return
        self._outbox.append(msg)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def send_threadsafe(self, loop: asyncio.AbstractEventLoop, msg: Outgoing) -> None:
        loop.call_soon_threadsafe(self.send, msg)

    async def send_and_drain(self, msg: Outgoing) -> None:
        """Send, then wait while the transport's buffer is above its high-water mark."""
        self.send(msg)
        self._flush()
        if not self.closed:
            try:
                await self._writer.drain()
            except (ConnectionError, RuntimeError) as exc:
                self.closed = True
                raise ChannelClosed(str(exc)) from exc

    def _flush(self) -> None:
        self._flush_scheduled = False
        if not self._outbox or self.closed:
            self._outbox.clear()
            return
        batch, self._outbox = self._outbox, []
        limit = self.max_message
        parts: list[bytes] = []
        size = 0
        try:
            for msg in batch:
                try:
                    data = self._packer.pack(msg)
                except (TypeError, ValueError, OverflowError) as exc:
                    self._packer.reset()
                    self._refuse(msg, exc)
                    continue
                if len(data) > _PACKER_KEEP:
                    # The packer keeps the buffer it grew: a fresh one gives it back.
                    self._packer = msgpack.Packer()
                if limit is not None and len(data) > limit:
                    self._refuse(msg, MessageTooLarge(len(data), limit))
                    continue
                if parts and size + len(data) > FRAME_TARGET:
                    self._write(parts, size)
                    parts, size = [], 0
                parts.append(data)
                size += len(data)
            if parts:
                self._write(parts, size)
        except (ConnectionError, RuntimeError):
            self.closed = True

    def _refuse(self, msg: Outgoing, exc: Exception) -> None:
        if self.on_refused is not None:
            self.on_refused(msg, exc)
        else:
            log.warning("a %r message was not sent: %s", msg.get("t"), exc)

    def _write(self, parts: list[bytes], size: int) -> None:
        array = _array_header(len(parts))
        head = _HEADER.pack(len(array) + size) + array
        if size <= _COALESCE:
            self._writer.write(head + b"".join(parts))
            return
        self._writer.write(head)
        for part in parts:
            self._writer.write(part)

    async def recv(self) -> list[Message]:
        """Wait for the next frame and return its messages. Raises ChannelClosed at EOF, and
        closes the channel (without reading its body) on a frame over `max_frame` or one
        that does not decode."""
        try:
            head = await self._reader.readexactly(_HEADER.size)
            (length,) = _HEADER.unpack(head)
            if length > self.max_frame:
                self.close()
                raise ChannelClosed(
                    f"frame of {length} bytes is over the limit of {self.max_frame}"
                )
            body = await self._read_body(length)
        except (asyncio.IncompleteReadError, ConnectionError) as exc:
            self.closed = True
            raise ChannelClosed("connection closed") from exc
        try:
            return decode(body)
        except ValueError as exc:
            self.close()
            raise ChannelClosed(f"malformed frame: {exc}") from None

    async def _read_body(self, length: int) -> bytes | bytearray:
        if length <= _READ_PIECE:
            return await self._reader.readexactly(length)
        body = bytearray()
        while len(body) < length:
            piece = await self._reader.read(min(_READ_PIECE, length - len(body)))
            if not piece:
                raise asyncio.IncompleteReadError(bytes(body[-16:]), length)
            body += piece
        return body

    def close(self) -> None:
        self._flush()
        self.closed = True
        with contextlib.suppress(RuntimeError):
            self._writer.close()


async def open_channel(addr: str) -> Channel:
    """Connect to "host:port" or "unix:/path" (containers use the unix socket: it is faster,
    and it still works inside a container whose network is cut off)."""
    if addr.startswith("unix:"):
        reader, writer = await asyncio.open_unix_connection(addr[5:], limit=2**20)
    else:
        host, _, port = addr.rpartition(":")
        reader, writer = await asyncio.open_connection(host.strip("[]"), int(port), limit=2**20)
        _nodelay(writer)
    return Channel(reader, writer)


# asyncio's own transports read up to 256 KiB at a time into a new bytes object. That is
# above glibc's mmap threshold unless the process happened to free a larger block first,
# and then every read of a small frame costs an mmap, an mremap and a munmap (measured: a
# container's CPU per `.map` input up by a fifth). 64 KiB reads come from the heap; large
# frames are read in pieces either way. uvloop's transports read into a buffer of their own.
_READ_SIZE = 64 * 1024


def heap_sized_reads() -> None:
    """Make this process's asyncio socket transports read at most 64 KiB at a time (the
    container runtime: its call channel and its web server's connections)."""
    from asyncio import selector_events

    transport = getattr(selector_events, "_SelectorSocketTransport", None)
    if transport is not None and isinstance(getattr(transport, "max_size", None), int):
        transport.max_size = _READ_SIZE


def _nodelay(writer: asyncio.StreamWriter) -> None:
    import socket

    sock = writer.get_extra_info("socket")
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def server_channel(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, max_frame: int
) -> Channel:
    _nodelay(writer)
    return Channel(reader, writer, max_frame=max_frame)
