"""The server's side of the processes in a Sandbox: their output as it arrives, read by
offset, and their exits.

A reader asks for a stream's bytes from an offset, which also says it has everything
before it: those bytes are dropped and the agent is given that much more credit, so the
agent sends at most `agent.CREDIT` bytes per stream ahead of the reader, and a process that
writes faster than it is read waits on its pipe instead of filling the server's memory.
A read that finds nothing new waits (up to its own limit) for output or the end.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field

from ketch.exception import InvalidError

# The most bytes one read answers with.
READ_LIMIT = 1024 * 1024

Grant = Callable[[str, int, int], None]  # (process id, fd, bytes): more credit for the agent


@dataclass
class Stream:
    """One output stream (1: stdout, 2: stderr) of one process."""

    data: bytearray = field(default_factory=bytearray)
    base: int = 0  # the offset of data[0]
    eof: bool = False
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def append(self, chunk: bytes) -> None:
        self.data += chunk
        self.changed.set()

    def close(self) -> None:
        self.eof = True
        self.changed.set()

    @property
    def end(self) -> int:
        return self.base + len(self.data)

    def consume(self, offset: int) -> int:
        """Drop what lies before `offset`; returns how many bytes were dropped."""
        if offset < self.base or offset > self.end:
            raise InvalidError(
                f"offset {offset} is outside this stream's unread bytes "
                f"({self.base}..{self.end}): each stream has one reader"
            )
        dropped = offset - self.base
        if dropped:
            del self.data[:dropped]
            self.base = offset
        return dropped


@dataclass
class Proc:
    """A process started in a sandbox: "main" (the sandbox's command) or an exec's id."""

    pid: str
    streams: dict[int, Stream] = field(default_factory=lambda: {1: Stream(), 2: Stream()})
    started: asyncio.Future[str | None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )
    returncode: int | None = None
    timed_out: bool = False
    ended: asyncio.Event = field(default_factory=asyncio.Event)

    def exited(self, code: int | None, timed_out: bool = False) -> None:
        if self.ended.is_set():
            return
        self.returncode = code
        self.timed_out = timed_out
        for stream in self.streams.values():
            stream.close()
        if not self.started.done():
            self.started.set_result("the sandbox ended before the process started")
        self.ended.set()


async def read(
    proc: Proc, fd: int, offset: int, wait: float, grant: Grant
) -> tuple[bytes, int, bool]:
    """Bytes of stream `fd` from `offset` (waiting up to `wait` s for some), the offset they
    start at, and whether the stream has ended after them."""
    stream = proc.streams.get(fd)
    if stream is None:
        raise InvalidError(f"fd must be 1 (stdout) or 2 (stderr), not {fd}")
    dropped = stream.consume(offset)
    if dropped and not stream.eof:
        grant(proc.pid, fd, dropped)
    if not stream.data and not stream.eof and wait > 0:
        stream.changed.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stream.changed.wait(), wait)
    chunk = bytes(stream.data[:READ_LIMIT])
    return chunk, offset, stream.eof and len(chunk) == len(stream.data)


async def wait_for(proc: Proc, timeout: float) -> int | None:
    """The process's exit code, or None if it is still running after `timeout` s."""
    if not proc.ended.is_set() and timeout > 0:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(proc.ended.wait(), timeout)
    return proc.returncode if proc.ended.is_set() else None
