"""What the Modal front end holds in memory: apps, functions, mounts, images, calls.

Ids carry Modal's prefixes (the client checks some of them). Inputs wait in a queue per
function; outputs are kept per call in arrival order, so that a poll can resume after the
last entry it saw (`last_entry_id`, "<count>-0")."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import secrets
import time
from dataclasses import dataclass, field
from typing import Any


def new_id(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(11)}"


class Signal:
    """Wakes every waiter on each change; a waiter re-checks its condition and waits again."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def fire(self) -> None:
        self._event.set()
        self._event = asyncio.Event()

    async def wait(self, timeout: float) -> None:
        event = self._event
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), max(0.0, timeout))


@dataclass
class LogEntry:
    entry_id: int
    task_id: str
    function_id: str
    fd: int  # Modal's FileDescriptor: 1 stdout, 2 stderr, 3 info
    data: str
    timestamp: float


@dataclass
class WireApp:
    app_id: str
    description: str
    environment: str
    client_id: str
    state: int  # Modal's AppState value
    created: float = field(default_factory=time.time)
    name: str = ""
    function_ids: dict[str, str] = field(default_factory=dict)
    class_ids: dict[str, str] = field(default_factory=dict)
    logs: list[LogEntry] = field(default_factory=list)
    log_signal: Signal = field(default_factory=Signal)
    done: bool = False
    stopped_at: float = 0.0
    deployed_at: float = 0.0

    def log(self, task_id: str, function_id: str, fd: int, data: str) -> None:
        self.logs.append(LogEntry(len(self.logs) + 1, task_id, function_id, fd, data, time.time()))
        self.log_signal.fire()


@dataclass
class PendingInput:
    input_id: str
    call_id: str
    idx: int
    item: Any  # api_pb2.FunctionInput
    retry_count: int = 0
    deadline: float = 0.0  # monotonic, while a container runs it; 0: none


@dataclass
class WireFunction:
    function_id: str
    app_id: str
    tag: str
    handle_metadata: Any = None  # api_pb2.FunctionHandleMetadata
    definition: Any = None  # api_pb2.Function, once created
    function_data: Any = None
    client_version: str = ""
    queue: collections.deque[PendingInput] = field(default_factory=collections.deque)
    queue_signal: Signal = field(default_factory=Signal)
    tasks: dict[str, Any] = field(default_factory=dict)  # task id -> containers.Container
    starting: int = 0

    def push(self, pending: PendingInput) -> None:
        self.queue.append(pending)
        self.queue_signal.fire()


@dataclass
class WireCall:
    call_id: str
    function_id: str
    call_type: int  # Modal's FunctionCallType
    created: float = field(default_factory=time.time)
    inputs: dict[str, PendingInput] = field(default_factory=dict)
    next_idx: int = 0
    outputs: list[Any] = field(default_factory=list)  # api_pb2.FunctionGetOutputsItem
    finished: set[str] = field(default_factory=set)  # input ids that have an output
    cleared: bool = False
    signal: Signal = field(default_factory=Signal)

    @property
    def unfinished(self) -> int:
        return len(self.inputs) - len(self.finished)


@dataclass
class WireImage:
    image_id: str
    python_version: str
    packages: list[str]
    client_version: str
    built: Any = None  # ketch._server.images.BuiltImage
    error: str = ""
