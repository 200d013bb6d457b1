"""Running one build command with its output streamed line by line, and the error a failed
build step raises."""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from ketch.exception import Error

__all__ = ["ImageBuildError", "LogFn", "run_streaming"]

LogFn = Callable[[str], None]

TAIL_LINES = 20
_READ_CHUNK = 1 << 16


class ImageBuildError(Error):
    """An image build step failed; names the step and carries the tail of its log."""

    def __init__(self, step: str, log_tail: str, detail: str = "") -> None:
        # All fields go through args so that the error survives pickling (cls(*args)).
        super().__init__(step, log_tail, detail)
        self.step = step
        self.log_tail = log_tail
        self.detail = detail

    def __str__(self) -> str:
        msg = f"image build failed at step {self.step}"
        if self.detail:
            msg += f": {self.detail}"
        if self.log_tail:
            msg += f"\n--- last lines of its log ---\n{self.log_tail}"
        return msg


async def run_streaming(
    cmd: Sequence[str],
    description: str,
    log: LogFn,
    *,
    env: Mapping[str, str],
    cwd: Path,
) -> None:
    """Run `cmd`, passing each output line (stdout and stderr) to `log` as it comes.

    A non-zero exit raises ImageBuildError naming `description`, with the output's tail.
    """
    tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)

    def emit(raw: bytes) -> None:
        line = raw.decode("utf-8", errors="replace").rstrip("\r")
        tail.append(line)
        log(line)

    try:
        proc = await asyncio.create_subprocess_exec(
            *cmd,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env=dict(env),
            cwd=cwd,
        )
    except OSError as exc:
        raise ImageBuildError(description, "", f"cannot run {cmd[0]}: {exc}") from exc
    assert proc.stdout is not None
    try:
        pending = b""
        while chunk := await proc.stdout.read(_READ_CHUNK):
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for raw in lines:
                emit(raw)
        if pending:
            emit(pending)
        returncode = await proc.wait()
    except BaseException:
        # Cancelled or failed while streaming: do not leave the tool running.
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        raise
    if returncode != 0:
        raise ImageBuildError(description, "\n".join(tail), f"exit status {returncode}")
