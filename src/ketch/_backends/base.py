"""The interface between the scheduler and whatever runs containers (local processes, Ray)."""

from __future__ import annotations

import abc
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

    def retire(self, group: str) -> None:  # noqa: B027 - optional hook
        """Containers of `group` (see ForkSpec) will not be started again: let go of
        what was kept to start them quickly (a fork-server template)."""


# Backends by name, imported lazily so that only the chosen one is loaded (ray is heavy).
BACKENDS = {
    "local": "ketch._backends.local:LocalBackend",
}


def load_backend(name: str, config: Config | None = None) -> Backend:
    """The backend called `name`, built with the process's settings."""
    import importlib

    from ketch.exception import InvalidError

    target = BACKENDS.get(name)
    if target is None:
        raise InvalidError(f"unknown backend {name!r}; choose one of {sorted(BACKENDS)}")
    module, _, attr = target.partition(":")
    cls = getattr(importlib.import_module(module), attr)
    backend: Backend = cls(config)
    return backend
