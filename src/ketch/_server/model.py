"""In-memory records the server works with: functions, inputs, containers and pools."""

from __future__ import annotations

import asyncio
import collections
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ketch._backends.base import ContainerHandle
    from ketch._server.images import BuiltImage
    from ketch._utils.wire import Channel


@dataclass
class FunctionDef:
    function_id: str
    app_id: str
    app_name: str
    environment: str
    version: int
    tag: str
    spec: dict[str, Any]  # the function part of the app spec, as the client sent it
    image: BuiltImage
    source_dir: str | None
    mount_dir: str | None
    # Mount path in the container -> the volume's directory on the host.
    volumes: dict[str, str] = field(default_factory=dict)

    @property
    def options(self) -> dict[str, Any]:
        opts: dict[str, Any] = self.spec["options"]
        return opts

    @property
    def max_inputs(self) -> int:
        return int(self.options.get("max_inputs") or 1)

    @property
    def batch_size(self) -> int:
        """@batched: the most inputs one call of the function takes (0: not batched)."""
        return int(self.options.get("batch_max_size") or 0)


@dataclass(eq=False)
class Input:
    iid: str
    function: FunctionDef
    pool_key: str
    request: dict[str, Any]  # args, method, params (pickled bytes where needed)
    kind: str  # "call" | "gen"
    client_id: str | None  # who waits for the result; None for spawned calls nobody awaits
    spawned: bool = False
    attempts: int = 0  # attempts used from the retry budget (user failures, timeouts)
    crashes: int = 0  # runs lost to container deaths (not charged to the budget)
    container: Container | None = None
    started: float | None = None
    deadline: float | None = None  # monotonic time at which the running attempt times out
    done: bool = False
    # Web requests are not sent to the container: assignment hands the gateway its address.
    future: asyncio.Future[str] | None = None
    queued_at: float = 0.0  # monotonic time it joined its queue (@batched waits from it)
    created: float = field(default_factory=time.monotonic)  # for call records and latency
    trace: Any = None  # its spans while the server exports traces (_server/tracing.py)


@dataclass(eq=False)
class Container:
    cid: str
    pool: Pool
    started: float = field(default_factory=time.monotonic)
    state: str = "starting"  # starting | ready | draining | dead
    handle: ContainerHandle | None = None
    channel: Channel | None = None
    inflight: dict[str, Input] = field(default_factory=dict)
    idle_since: float = field(default_factory=time.monotonic)
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
        limit = self.pool.function.options.get("inputs_per_container")
        if limit:
            free = min(free, int(limit) - self.assigned)
        return free


@dataclass(eq=False)
class Pool:
    key: str
    function: FunctionDef
    params: bytes | None
    queue: collections.deque[Input] = field(default_factory=collections.deque)
    containers: dict[str, Container] = field(default_factory=dict)
    crash_times: collections.deque[float] = field(
        default_factory=lambda: collections.deque(maxlen=32)
    )
    retired: bool = False  # an old version: drain, start nothing new
    waiting_reason: str | None = None  # why queued inputs are not being served, for status
    backoff_until: float = 0.0  # after a start-up failure, no automatic restarts until then
    reconcile_scheduled: bool = False
    batch_timer: asyncio.TimerHandle | None = None  # @batched: dispatch when wait_ms is up

    def live(self) -> list[Container]:
        return [c for c in self.containers.values() if c.state in ("starting", "ready")]

    def running_inputs(self) -> int:
        return sum(len(c.inflight) for c in self.containers.values())
