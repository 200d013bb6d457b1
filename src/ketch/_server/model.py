"""In-memory records the server works with: functions, inputs, web requests, containers and
pools."""

from __future__ import annotations

import abc
import asyncio
import collections
import functools
from dataclasses import KW_ONLY, dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ketch._backends.base import ContainerHandle
    from ketch._server.clock import TimerHandle
    from ketch._server.images import BuiltImage
    from ketch._utils.protocol.spec import NamedSecret, OptionsSpec, StoredFunction
    from ketch._utils.wire import Channel


@dataclass
class FunctionDef:
    function_id: str
    app_id: str
    app_name: str
    environment: str
    version: int
    tag: str
    spec: StoredFunction  # decoded once, when its version was registered
    image: BuiltImage
    source_dir: str | None
    mount_dir: str | None
    # Mount path in the container -> the volume's directory on the host.
    volumes: dict[str, str] = field(default_factory=dict)
    # Cls.with_options(secrets=[...]) of a pool: inline values, and named secrets to resolve.
    override_env: dict[str, str] = field(default_factory=dict)
    extra_secrets: tuple[NamedSecret, ...] = ()
    # Where the image's copy=False files are laid out by their remote paths (all of them;
    # `mount_dir` is their /root part, which is importable).
    files_dir: str | None = None

    @functools.cached_property
    def container_wire(self) -> dict[str, Any]:
        """What containers and fork-server templates are told of the function (they run
        without pydantic: `_utils.protocol.container`). Made once per version and pool."""
        return self.spec.for_container().to_wire()

    @property
    def options(self) -> OptionsSpec:
        return self.spec.options

    # Read for every input dispatched (free_slots): kept, not looked up through the spec.
    @functools.cached_property
    def max_inputs(self) -> int:
        return self.spec.options.max_inputs

    @functools.cached_property
    def batch_size(self) -> int:
        """@batched: the most inputs one call of the function takes (0: not batched)."""
        return self.spec.options.batch_size

    @functools.cached_property
    def inputs_per_container(self) -> int | None:
        return self.spec.options.inputs_per_container


@dataclass(eq=False)
class Work(abc.ABC):
    """What waits in a pool's queue and holds a slot of a container: an `Input` or a
    `WebRequest`."""

    iid: str
    function: FunctionDef
    pool_key: str
    _: KW_ONLY
    container: Container | None = None
    started: float | None = None
    deadline: float | None = None  # the clock's time at which the running attempt times out
    done: bool = False
    queued_at: float = 0.0  # the clock's time it joined its queue (@batched waits from it)
    created: float = 0.0  # the clock's time when it was made: for call records and latency
    trace: Any = None  # its spans while the server exports traces (_server/tracing.py)

    @abc.abstractmethod
    def pool_args(self) -> tuple[bytes | None, dict[str, Any] | None]:
        """What picks its pool besides the function: class parameters and option overrides."""


@dataclass(eq=False)
class Input(Work):
    """A function call, sent to the container that takes it."""

    request: dict[str, Any]  # args, method, params (pickled bytes where needed)
    kind: str  # "call" | "gen"
    client_id: str | None  # who waits for the result; None for spawned calls nobody awaits
    spawned: bool = False
    attempts: int = 0  # attempts used from the retry budget (user failures, timeouts)
    crashes: int = 0  # runs lost to container deaths (not charged to the budget)
    # Sent to its container ahead of a free slot (the prefetch window) and not yet reported
    # started there: no deadline runs, and a crash of the container is not its crash.
    prefetched: bool = False

    def pool_args(self) -> tuple[bytes | None, dict[str, Any] | None]:
        return self.request.get("params"), self.request.get("options")


@dataclass(eq=False)
class WebRequest(Work):
    """A request through the gateway. It never passes through the scheduler: being assigned
    hands the gateway the container's address (through `future`), and the request holds
    that slot until the gateway says it is done."""

    params: bytes | None
    future: asyncio.Future[str]

    def pool_args(self) -> tuple[bytes | None, dict[str, Any] | None]:
        return self.params, None


@dataclass(eq=False)
class Container:
    cid: str
    pool: Pool
    started: float = 0.0  # the scheduler's clock when it was registered
    state: str = "starting"  # starting | ready | draining | dead
    handle: ContainerHandle | None = None
    channel: Channel | None = None
    inflight: dict[str, Work] = field(default_factory=dict)
    idle_since: float = 0.0
    startup_error: dict[str, Any] | None = None
    log_tail: collections.deque[str] = field(default_factory=lambda: collections.deque(maxlen=40))
    stop_reason: str | None = None  # set when ketch itself stops or kills it
    web_addr: str | None = None  # where the container serves HTTP, for web functions
    gpus: tuple[int, ...] = ()  # indices of the host GPUs it holds (S7)
    ready_at: float = 0.0  # monotonic time it said ready (its start, for traces)

    assigned: int = 0  # inputs handed to it over its life

    @property
    def free_slots(self) -> int:
        if self.pool.function.batch_size:
            return 0 if self.inflight else 1  # one batch at a time
        free = self.pool.function.max_inputs - len(self.inflight)
        limit = self.pool.function.inputs_per_container
        if limit:
            free = min(free, limit - self.assigned)
        return free


@dataclass(eq=False)
class Pool:
    key: str
    function: FunctionDef
    params: bytes | None
    queue: collections.deque[Work] = field(default_factory=collections.deque)
    containers: dict[str, Container] = field(default_factory=dict)
    crash_times: collections.deque[float] = field(
        default_factory=lambda: collections.deque(maxlen=32)
    )
    retired: bool = False  # an old version: drain, start nothing new
    waiting_reason: str | None = None  # why queued inputs are not being served, for status
    backoff_until: float = 0.0  # after a start-up failure, no automatic restarts until then
    reconcile_scheduled: bool = False
    batch_timer: TimerHandle | None = None  # @batched: dispatch when wait_ms is up
    # The mean time an input of the pool runs (seconds, a moving average; 0: none seen yet),
    # which sizes the prefetch window.
    mean_run: float = 0.0

    def live(self) -> list[Container]:
        return [c for c in self.containers.values() if c.state in ("starting", "ready")]

    def running_inputs(self) -> int:
        return sum(len(c.inflight) for c in self.containers.values())
