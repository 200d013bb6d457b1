"""Containers as local process groups running `python -m ketch._runtime`."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal

from ketch._backends.base import (
    EXITED,
    KILLED,
    Backend,
    Capacity,
    ContainerHandle,
    ContainerSpec,
    LogSink,
)


class LocalContainer(ContainerHandle):
    def __init__(self, container_id: str, proc: asyncio.subprocess.Process, log: LogSink) -> None:
        self.container_id = container_id
        self.proc = proc
        self._killed = False
        self._pumps = [
            asyncio.ensure_future(_pump(proc.stdout, "stdout", log)),
            asyncio.ensure_future(_pump(proc.stderr, "stderr", log)),
        ]

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _signal(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, sig)

    async def stop(self, grace: float) -> None:
        if self.proc.returncode is not None:
            return
        self._signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(self.proc.wait(), grace)
        except TimeoutError:
            self.kill()
            await self.proc.wait()

    def kill(self) -> None:
        self._killed = True
        self._signal(signal.SIGKILL)

    async def wait(self) -> tuple[str, int | None]:
        code = await self.proc.wait()
        # Let the log pumps finish so the last lines (often the reason) are not lost.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*self._pumps), 2.0)
        self._signal(signal.SIGKILL)  # children the user left behind go with the container
        reason = KILLED if self._killed or code == -signal.SIGKILL else EXITED
        return reason, code


async def _pump(stream: asyncio.StreamReader | None, name: str, log: LogSink) -> None:
    if stream is None:
        return
    while True:
        try:
            line = await stream.readline()
        except ValueError:  # a line past the reader's limit: take what is there
            line = await stream.read(2**16)
        if not line:
            return
        log(name, line.decode(errors="replace").rstrip("\n"))


def _no_network_prefix() -> list[str]:
    """A new, empty network namespace: only loopback, and that is down. The container still
    reaches the server through its unix socket, which lives on the filesystem."""
    unshare = shutil.which("unshare")
    if unshare is None:
        raise RuntimeError("block_network=True needs the `unshare` command (util-linux)")
    return [unshare, "-n"] if os.geteuid() == 0 else [unshare, "-r", "-n"]


class LocalBackend(Backend):
    async def start(self, spec: ContainerSpec, log: LogSink) -> LocalContainer:
        env = dict(spec.env)
        env["PYTHONUNBUFFERED"] = "1"
        argv = [str(spec.python), "-m", "ketch._runtime"]
        if spec.block_network:
            argv = [*_no_network_prefix(), *argv]
        proc = await asyncio.create_subprocess_exec(
            *argv,
            env=env,
            cwd=spec.cwd,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
            limit=2**20,
        )
        return LocalContainer(spec.container_id, proc, log)

    def capacity(self) -> Capacity:
        cpus = float(os.cpu_count() or 1)
        try:
            pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError):
            pages = 0
        return Capacity(cpus=cpus, memory_mb=pages // 2**20)
