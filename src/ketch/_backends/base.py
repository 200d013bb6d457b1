"""The interface between the scheduler and whatever runs containers (local processes, Ray)."""

from __future__ import annotations

import abc
import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ketch._backends.sandbox import SandboxSpec
    from ketch.config import Config

# A container's exit reasons, as the scheduler sees them.
EXITED = "exited"
KILLED = "killed"
OOM = "oom"
STARTUP_FAILED = "startup_failed"

# (stream: stdout, stderr, system, or "event" for a platform note kept out of run output, line)
LogSink = Callable[[str, str], None]


@dataclass(frozen=True)
class ContainerSpec:
    """What a backend needs to start one container running the ketch runtime."""

    container_id: str
    python: Path
    env: dict[str, str]
    cwd: Path
    cpu: float | None = None
    memory_mb: int | None = None
    gpus: tuple[str, ...] = field(default_factory=tuple)
    block_network: bool = False
    # A network namespace of its own with outbound traffic through a user-mode stack, so
    # that servers on fixed ports (web_server) of several containers do not collide.
    isolate_network: bool = False
    # Mount path inside the container -> directory on the host (volumes).
    volumes: dict[str, str] = field(default_factory=dict)
    # What a fork server needs to load the function ahead of time; None: always a plain start.
    fork: ForkSpec | None = None
    # What the container may see of the host when it runs sandboxed (the backend decides
    # whether it does: KETCH_SANDBOX); None: the backend has nothing to hide.
    sandbox: SandboxSpec | None = None
    # What the image's Python runs: the ketch runtime, or (a Sandbox) the agent's script.
    entry: tuple[str, ...] = ("-m", "ketch._runtime")


@dataclass(frozen=True)
class ForkSpec:
    """A function's code as a fork-server template loads it ahead of any container
    (docs/architecture.md, "Fork server"). Containers of one `group` (a function at one app
    version) retire together; `preload` is JSON: the function spec, the parameters (base64)
    when `snapshot` instantiates the class in the template, sys.path, the web runtime path."""

    group: str
    preload: dict[str, Any]
    # The template runs `@enter(snap=True)` hooks once (enable_memory_snapshot=True).
    snapshot: bool = False
    # How long a start may wait for a template that is still loading the code.
    startup_timeout: float = 300.0


@dataclass(frozen=True)
class Capacity:
    cpus: float
    memory_mb: int
    gpus: tuple[str, ...] = ()


class ContainerHandle(abc.ABC):
    container_id: str

    @abc.abstractmethod
    async def stop(self, grace: float) -> None:
        """Ask the container to exit, then kill it after `grace` seconds."""

    @abc.abstractmethod
    async def wait(self) -> tuple[str, int | None]:
        """Wait for the exit; returns (reason, exit code)."""

    @abc.abstractmethod
    def kill(self) -> None:
        """Terminate at once (timeouts, cancellation of uninterruptible code)."""


class Backend(abc.ABC):
    # Whether containers run sandboxed (their filesystem is the sandbox's: the app's
    # source is shown at /root, as on Modal).
    sandboxed: bool = False

    @abc.abstractmethod
    async def start(self, spec: ContainerSpec, log: LogSink) -> ContainerHandle: ...

    @abc.abstractmethod
    def capacity(self) -> Capacity: ...

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release backend resources at server shutdown."""

    def prepare(self, spec: ContainerSpec) -> None:  # noqa: B027 - optional hook
        """Containers like `spec` are wanted soon (their function was just deployed): get
        ready to start them quickly (a fork-server template), or do nothing."""

    def retire(self, group: str) -> None:  # noqa: B027 - optional hook
        """Containers of `group` (see ForkSpec) will not be started again: let go of
        what was kept to start them quickly (a fork-server template)."""

    def call_address(self, unix_path: str, host: str, port: int) -> str:
        """Where containers reach the server's call port: on one machine its unix socket;
        a backend whose containers run elsewhere gives a TCP address (`host` and `port`
        are the call port's)."""
        return f"unix:{unix_path}"

    def nodes(self) -> list[dict[str, Any]]:
        """The machines containers run on (`ketch node list`): this one, for a backend
        that runs them here."""
        import socket

        cap = self.capacity()
        gpus: dict[str, int] = {}
        for name in cap.gpus:
            gpus[name] = gpus.get(name, 0) + 1
        return [
            {
                "node_id": LOCAL_NODE,
                "address": socket.gethostname(),
                "alive": True,
                "cpus": cap.cpus,
                "memory_mb": cap.memory_mb,
                "gpus": gpus,
                "resources": {},
            }
        ]


# The node id of containers that a backend runs on the server's own machine.
LOCAL_NODE = "local"


# Backends by name, imported lazily so that only the chosen one is loaded (ray is heavy).
BACKENDS = {
    "local": "ketch._backends.local:LocalBackend",
    "ray": "ketch._backends.ray:RayBackend",
}


def load_backend(name: str, config: Config | None = None) -> Backend:
    """The backend called `name`, built with the process's settings."""
    import importlib

    from ketch.exception import InvalidError

    target = BACKENDS.get(name)
    if target is None:
        raise InvalidError(f"unknown backend {name!r}; choose one of {sorted(BACKENDS)}")
    module, _, attr = target.partition(":")
    try:
        imported = importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name != "ray":
            raise
        raise InvalidError(
            "KETCH_BACKEND=ray needs Ray on the server: pip install 'ketch[ray]'"
        ) from exc
    cls = getattr(imported, attr)
    backend: Backend = cls(config)
    return backend


async def pump_lines(stream: asyncio.StreamReader | None, name: str, log: LogSink) -> None:
    """Pass a process's output to `log` line by line until it ends."""
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
