"""The Ray actor that is one ketch container (`ketch-<container id>`), as it runs on a node.

It starts the container's process group (`ray_guard` leading it, the runtime under it),
hands its output to the server in batches and reports its exit. It is an async actor, so
that a long `wait` and `logs` do not block `signal`. Ray is imported only where a method
runs inside Ray; the class itself is plain, so that `_backends/ray.py` stays the one module
that wraps it with `ray.remote`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from typing import Any

from ketch._backends.base import pump_lines

# A batch of output lines is sent once this many are waiting, or at once when fewer are.
_LOG_BATCH = 500


def version_refusal(node_ip: str, node_version: str, server_version: str) -> str | None:
    """Why a node may not run containers of this server (G2), or None: the runtime and the
    call protocol are the server's own, so the versions must be the same."""
    if node_version == server_version:
        return None
    return (
        f"node {node_ip} runs ketch {node_version} but the server runs ketch "
        f"{server_version}; install ketch {server_version} on every node of the cluster"
    )


class ContainerActor:
    def __init__(self, container_id: str) -> None:
        self.container_id = container_id
        self._proc: asyncio.subprocess.Process | None = None
        self._lines: list[tuple[str, str]] = []
        self._more = asyncio.Event()
        self._pumps: list[asyncio.Future[None]] = []
        self._code: int | None = None
        self._done = asyncio.Event()
        self._reaper: asyncio.Future[None] | None = None

    async def start(
        self, argv: list[str], env: dict[str, str], cwd: str, server_version: str
    ) -> dict[str, Any]:
        """Start the container unless this node's ketch differs from the server's; returns
        where it runs (node id and address, ketch version) and `refused` with the reason
        when it did not start."""
        import ray

        import ketch

        util: Any = ray.util  # partly untyped
        info: dict[str, Any] = {
            "node_id": ray.get_runtime_context().get_node_id(),
            "node_ip": util.get_node_ip_address(),
            "version": ketch.__version__,
            "refused": None,
        }
        info["refused"] = version_refusal(info["node_ip"], ketch.__version__, server_version)
        if info["refused"]:
            self._done.set()
            return info
        # A Ray worker is started by its node's raylet: the guard watches that process.
        raylet = os.getppid()
        workdir = cwd if os.path.isdir(cwd) else None
        self._proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "ketch._backends.ray_guard",
            str(raylet),
            *argv,
            env=env,
            cwd=workdir,
            stdin=asyncio.subprocess.PIPE,  # never written: its EOF tells the guard we died
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
            limit=2**20,
        )
        info["pid"] = self._proc.pid
        self._pumps = [
            asyncio.ensure_future(pump_lines(self._proc.stdout, "stdout", self._line)),
            asyncio.ensure_future(pump_lines(self._proc.stderr, "stderr", self._line)),
        ]
        self._reaper = asyncio.ensure_future(self._reap())
        return info

    def _line(self, name: str, line: str) -> None:
        self._lines.append((name, line))
        self._more.set()

    async def _reap(self) -> None:
        assert self._proc is not None
        code = await self._proc.wait()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*self._pumps), 2.0)
        self._signal(signal.SIGKILL)  # children the user left behind go with the container
        self._code = code
        self._done.set()
        self._more.set()

    async def wait(self) -> int | None:
        """The container's exit code (negative: the signal that ended it)."""
        await self._done.wait()
        return self._code

    async def logs(self) -> list[tuple[str, str]] | None:
        """The output lines since the last call, waiting for some; None once the container
        has ended and everything was sent."""
        while not self._lines:
            if self._done.is_set():
                return None
            self._more.clear()
            await self._more.wait()
        batch, self._lines = self._lines[:_LOG_BATCH], self._lines[_LOG_BATCH:]
        return batch

    def signal(self, sig: int) -> None:
        self._signal(sig)

    def _signal(self, sig: int) -> None:
        if self._proc is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self._proc.pid, sig)
