"""A sandbox process's output as the server keeps it (_server/sandbox_procs.py): read by
offset, dropped once read, credit given back for what was dropped, waits that end with
output or at the end of the stream."""

from __future__ import annotations

import asyncio

import pytest

from ketch._server.sandbox_procs import Proc, read, wait_for
from ketch.exception import InvalidError


def _run(coro):  # type: ignore[no-untyped-def]
    return asyncio.run(coro)


@pytest.mark.spec("X2")
def test_reads_by_offset_drop_what_was_read_and_give_credit_back() -> None:
    async def main() -> None:
        proc = Proc("pr-1")
        granted: list[tuple[str, int, int]] = []

        def grant(pid: str, fd: int, n: int) -> None:
            granted.append((pid, fd, n))

        proc.streams[1].append(b"hello ")
        proc.streams[1].append(b"world")
        data, start, eof = await read(proc, 1, 0, 0, grant)
        assert (data, start, eof) == (b"hello world", 0, False)
        assert granted == []  # nothing acknowledged yet
        data, _, _ = await read(proc, 1, 6, 0, grant)  # the reader kept only "hello "
        assert data == b"world" and granted == [("pr-1", 1, 6)]
        assert proc.streams[1].base == 6
        with pytest.raises(InvalidError, match="one reader"):
            await read(proc, 1, 0, 0, grant)  # already dropped
        proc.exited(0)
        data, _, eof = await read(proc, 1, 11, 0, grant)
        assert data == b"" and eof
        # No credit for a stream that has ended.
        assert granted == [("pr-1", 1, 6)]

    _run(main())


def test_a_read_waits_for_output_and_for_the_end() -> None:
    async def main() -> None:
        proc = Proc("pr-2")
        waiting = asyncio.ensure_future(read(proc, 2, 0, 30, lambda *a: None))
        await asyncio.sleep(0)
        assert not waiting.done()
        proc.streams[2].append(b"late")
        assert (await waiting)[0] == b"late"
        ending = asyncio.ensure_future(read(proc, 2, 4, 30, lambda *a: None))
        await asyncio.sleep(0)
        proc.exited(3)
        assert await ending == (b"", 4, True)
        assert await wait_for(proc, 0) == 3

    _run(main())


def test_a_wait_says_none_while_running_and_bad_fds_are_refused() -> None:
    async def main() -> None:
        proc = Proc("pr-3")
        assert await wait_for(proc, 0) is None
        with pytest.raises(InvalidError, match="fd must be"):
            await read(proc, 3, 0, 0, lambda *a: None)
        assert await wait_for(proc, 0.01) is None

    _run(main())
