"""The interface between the scheduler and whatever runs containers (local processes, Ray)."""

from __future__ import annotations

import abc
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

# A container's exit reasons, as the scheduler sees them.
EXITED = "exited"
KILLED = "killed"
OOM = "oom"
STARTUP_FAILED = "startup_failed"

LogSink = Callable[[str, str], None]  # (stream name, line)


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
    @abc.abstractmethod
    async def start(self, spec: ContainerSpec, log: LogSink) -> ContainerHandle: ...

    @abc.abstractmethod
    def capacity(self) -> Capacity: ...

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release backend resources at server shutdown."""


# Backends by name, imported lazily so that only the chosen one is loaded (ray is heavy).
BACKENDS = {
    "local": "ketch._backends.local:LocalBackend",
}


def load_backend(name: str) -> Backend:
    import importlib

    from ketch.exception import InvalidError

    target = BACKENDS.get(name)
    if target is None:
        raise InvalidError(f"unknown backend {name!r}; choose one of {sorted(BACKENDS)}")
    module, _, attr = target.partition(":")
    cls = getattr(importlib.import_module(module), attr)
    backend: Backend = cls()
    return backend
