"""The call protocol's messages: one type per kind, in each direction.

Four peers talk over `wire.Channel`s: SDK clients and containers send to the server, the
server sends to both. Every message is a map whose "t" names its kind; the constants below
are the only spelling of the kinds, and each direction has a table from kind to type that
the receivers' dispatch tables are checked against (tests/unit/test_protocol_messages.py).

The types are TypedDicts, so a message stays the plain dict msgpack encodes and decodes:
typing one costs nothing at run time. The server checks what clients and containers send
against these types (`_server/messages.py`) before acting on it; the SDK and the containers
trust the server once it has accepted their hello, and read its messages unchecked.

This module is imported by the SDK and by containers, whose environments hold only the
standard library, cloudpickle and msgpack: nothing here may import pydantic. The bounds the
server enforces are declared with `Within`, which pydantic reads through its schema hook.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, Final, Literal, NotRequired

if TYPE_CHECKING or sys.version_info >= (3, 12):
    from typing import TypedDict
else:
    try:
        # Before 3.12 pydantic reads TypedDicts from typing_extensions only.
        from typing_extensions import TypedDict
    except ImportError:  # a container: its messages are never validated
        from typing import TypedDict

# -- kinds -----------------------------------------------------------------------------
# First frames: a peer's hello and the server's answer to it.
HELLO: Final = "hello"
WELCOME: Final = "welcome"
INIT: Final = "init"
DENIED: Final = "denied"
# From SDK clients.
CALL: Final = "call"
SPAWN: Final = "spawn"
GET: Final = "get"
LOOKUP: Final = "lookup"
CANCEL: Final = "cancel"  # also server -> container, with another shape
OBJ: Final = "obj"
LOGS: Final = "logs"
LEASE: Final = "lease"
PING: Final = "ping"
# To SDK clients.
RES: Final = "res"
ITEM: Final = "item"  # also container -> server, with the same shape
REPLY: Final = "reply"
LOG: Final = "log"
PONG: Final = "pong"
# From containers.
READY: Final = "ready"
STARTUP_FAILED: Final = "startup_failed"
OUT: Final = "out"
STUCK: Final = "stuck"
STARTED: Final = "started"
UNQUEUED: Final = "unqueued"
# To containers.
INPUT: Final = "input"
BATCH: Final = "batch"
STOP: Final = "stop"
AGENT: Final = "agent"
UNQUEUE: Final = "unqueue"

# What an input is: one call, or a generator whose items stream back.
CallKind = Literal["call", "gen"]


@dataclass(frozen=True)
class Within:
    """Bounds the server holds a field to: a number's range (`ge`, `le`, `finite`) or a
    list's length. pydantic applies them through `__get_pydantic_core_schema__`; to the
    type checker and everywhere else they are inert metadata."""

    ge: float | None = None
    le: float | None = None
    finite: bool = False
    min_length: int | None = None
    max_length: int | None = None

    def __get_pydantic_core_schema__(self, source: Any, handler: Any) -> Any:
        schema = dict(handler(source))
        for key in ("ge", "le", "min_length", "max_length"):
            value = getattr(self, key)
            if value is not None:
                schema[key] = value
        if self.finite:
            schema["allow_inf_nan"] = False
        return schema


# SQLite keeps integers in 64 bits; a larger one would fail deep inside a query.
Count = Annotated[int, Within(ge=0, le=2**63 - 1)]
Seconds = Annotated[float, Within(ge=0, le=10**9, finite=True)]
# A request's id, echoed in its reply; None when the sender waits for no reply.
Rid = int | None


class ErrorPayload(TypedDict):
    """An exception as it travels: pickled by reference (and by value when the sender has
    its module), with its text and traceback for callers that cannot unpickle it."""

    exc: bytes | None
    exc_by_value: NotRequired[bytes | None]
    repr: str
    tb: str


# -- first frames ------------------------------------------------------------------------
class ClientHello(TypedDict):
    t: Literal["hello"]
    role: Literal["client"]
    token: str
    client_id: str


class ContainerHello(TypedDict):
    t: Literal["hello"]
    role: Literal["container"]
    token: str
    cid: str


class Welcome(TypedDict):
    t: Literal["welcome"]
    max_message: int  # the largest message the server accepts from this client


class Denied(TypedDict):
    t: Literal["denied"]
    reason: str


class Init(TypedDict):
    """Everything a container needs to load its function (the first frame it gets)."""

    t: Literal["init"]
    function: dict[str, Any]  # ContainerFunction.to_wire(): what the runtime reads of the spec
    params: bytes | None
    sys_path: list[str]
    web_runtime: str | None
    web_method: str | None
    web_socket: str
    web_urls: dict[str, str]
    app_name: str
    app_id: str
    max_message: int


# -- SDK client -> server ----------------------------------------------------------------
class Request(TypedDict):
    """One input's arguments, the same in a call, a spawn and the input a container runs."""

    args: bytes
    method: str | None
    params: bytes | None
    options: NotRequired[dict[str, Any] | None]  # a class handle's with_* overrides
    # The caller's OpenTelemetry context (O5), when its program has one.
    traceparent: NotRequired[str]


class Call(TypedDict):
    t: Literal["call"]
    fid: str
    iid: str
    kind: CallKind
    req: Request


class Spawn(TypedDict):
    t: Literal["spawn"]
    fid: str
    iid: str
    req: Request
    rid: Rid


class Get(TypedDict):
    t: Literal["get"]
    call_id: str
    timeout: NotRequired[Seconds | None]
    rid: Rid


class Lookup(TypedDict):
    t: Literal["lookup"]
    environment: str
    app: str
    name: str
    rid: Rid


class Cancel(TypedDict):
    t: Literal["cancel"]
    call_id: str
    rid: NotRequired[Rid]


class Logs(TypedDict):
    t: Literal["logs"]
    app_id: str


class Lease(TypedDict):
    """The app lives as long as this connection (an ephemeral app of `ketch run`)."""

    t: Literal["lease"]
    app_id: str


class Ping(TypedDict):
    t: Literal["ping"]
    rid: NotRequired[Rid]


class Obj(TypedDict):
    """A Dict or Queue request; the fields beyond these depend on `op` (OBJECT_OPS)."""

    t: Literal["obj"]
    op: str
    rid: NotRequired[Rid]
    op_id: NotRequired[str | None]  # replayed, not redone, when the client sends it again
    wid: NotRequired[str | None]  # names a blocking request, so that an abort can stop it


# -- the operations of "obj" requests ----------------------------------------------------
class OpenOp(Obj):
    kind: str
    environment: str
    name: NotRequired[str | None]
    create: NotRequired[bool]
    exclusive: NotRequired[bool]


class KindOp(Obj):
    kind: str
    environment: str


class HoldOp(Obj):
    object_id: str


class DeleteOp(Obj):
    object_id: NotRequired[str | None]
    kind: NotRequired[str]
    environment: NotRequired[str]
    name: NotRequired[str]
    allow_missing: NotRequired[bool]


class AbortOp(TypedDict):
    t: Literal["obj"]
    op: Literal["abort"]
    wid: str | None
    rid: NotRequired[Rid]


class ObjectOp(Obj):
    object_id: str


class KeyOp(ObjectOp):
    key: bytes


class DictPut(KeyOp):
    value: bytes
    skip_if_exists: NotRequired[bool]


class DictUpdate(ObjectOp):
    pairs: list[Annotated[list[bytes], Within(min_length=2, max_length=2)]]


class DictScan(ObjectOp):
    after: NotRequired[Count]
    limit: NotRequired[Annotated[int, Within(ge=1, le=10_000)]]
    keys: NotRequired[bool]
    values: NotRequired[bool]


class PartitionOp(ObjectOp):
    partition: NotRequired[str | None]


class QueuePut(PartitionOp):
    values: list[bytes]
    partition_ttl: NotRequired[Seconds]
    block: NotRequired[bool]
    timeout: NotRequired[Seconds | None]


class QueueGet(PartitionOp):
    n: NotRequired[Annotated[int, Within(ge=1, le=2**31)]]
    block: NotRequired[bool]
    timeout: NotRequired[Seconds | None]
    raise_empty: NotRequired[bool]


class QueueLen(PartitionOp):
    total: NotRequired[bool]


class QueueNext(PartitionOp):
    after: NotRequired[Count]
    timeout: NotRequired[Seconds | None]


class QueueClear(PartitionOp):
    all: NotRequired[bool]


# -- server -> SDK client ----------------------------------------------------------------
class Res(TypedDict):
    """A call's outcome. The SDK makes some itself, for calls that failed before reaching
    the server: those carry the exception in `local_error`, which never travels."""

    t: Literal["res"]
    iid: str
    ok: bool
    payload: NotRequired[bytes | None]
    error: NotRequired[ErrorPayload | None]
    local_error: NotRequired[BaseException]


class Item(TypedDict):
    """One item of a generator: container -> server -> client, unchanged in shape."""

    t: Literal["item"]
    iid: str
    payload: bytes


class Reply(TypedDict):
    """The answer to a request (a message with a `rid`). Beyond these fields it carries
    the request's own answer (`info` for a lookup, `object_id` for an open...)."""

    t: Literal["reply"]
    rid: int
    ok: bool
    error: NotRequired[ErrorPayload]


class Log(TypedDict):
    t: Literal["log"]
    app_id: str
    function: str
    container: str
    stream: str
    line: str
    ts: float


class Pong(TypedDict):
    t: Literal["pong"]
    rid: Rid


# -- container -> server -----------------------------------------------------------------
class Ready(TypedDict):
    t: Literal["ready"]
    web_addr: NotRequired[str | None]  # where the gateway reaches a web function


class StartupFailed(TypedDict):
    t: Literal["startup_failed"]
    error: ErrorPayload


class Out(TypedDict):
    """An input's outcome (the end of a generator, too: then the payload is None)."""

    t: Literal["out"]
    iid: str
    ok: bool
    payload: NotRequired[bytes | None]
    error: NotRequired[ErrorPayload | None]


class Stuck(TypedDict):
    """An input the server gave up on runs in a thread that cannot be stopped: the server
    replaces the container."""

    t: Literal["stuck"]
    iid: str


class Started(TypedDict):
    """An input sent ahead of a free slot (`Input.prefetched`) has started: its timeout
    counts from now."""

    t: Literal["started"]
    iid: str


class Unqueued(TypedDict):
    """The answer to `Unqueue`: the inputs handed back, never started here (the others had
    started, and their `Started` came first)."""

    t: Literal["unqueued"]
    iids: list[str]


# -- server -> container -----------------------------------------------------------------
class Input(Request):
    t: Literal["input"]
    iid: str
    kind: CallKind
    call_id: NotRequired[str]  # a spawned call's id (`current_function_call_id()`)
    # Sent ahead of a free slot (the server's prefetch window): it waits in the container,
    # in order, and the container says when it starts (`Started`).
    prefetched: NotRequired[bool]


class Unqueue(TypedDict):
    """Hand back these inputs if they have not started (the container drains or its
    version is replaced): answered with `Unqueued`."""

    t: Literal["unqueue"]
    iids: list[str]


class BatchInput(TypedDict):
    iid: str
    args: bytes
    method: str | None


class Batch(TypedDict):
    """Inputs of a `@batched` function that run as one call."""

    t: Literal["batch"]
    kind: Literal["call"]
    inputs: list[BatchInput]


class CancelInput(TypedDict):
    t: Literal["cancel"]
    iid: str
    reason: str  # "timeout" or "cancelled"


class StartAgent(TypedDict):
    """Start the sandbox agent (`_runtime/agent.py`) in this container, connecting to
    `socket` (`ketch container exec`, `ketch.forward`)."""

    t: Literal["agent"]
    socket: str


class Stop(TypedDict):
    """Finish what runs and leave (also the first frame to a container nobody expects)."""

    t: Literal["stop"]


# -- each direction: the kinds its receiver handles, and their types ----------------------
# Kinds of the first frame only, which the code that opens a connection handles; every
# other kind a side receives has a handler in that side's dispatch table.
HANDSHAKE: Final = frozenset({HELLO, WELCOME, INIT, DENIED})

FROM_CLIENT: Final[Mapping[str, Any]] = {
    HELLO: ClientHello,
    CALL: Call,
    SPAWN: Spawn,
    GET: Get,
    LOOKUP: Lookup,
    CANCEL: Cancel,
    OBJ: Obj,
    LOGS: Logs,
    LEASE: Lease,
    PING: Ping,
}
TO_CLIENT: Final[Mapping[str, Any]] = {
    WELCOME: Welcome,
    DENIED: Denied,
    RES: Res,
    ITEM: Item,
    REPLY: Reply,
    LOG: Log,
    PONG: Pong,
}
FROM_CONTAINER: Final[Mapping[str, Any]] = {
    HELLO: ContainerHello,
    READY: Ready,
    STARTUP_FAILED: StartupFailed,
    OUT: Out,
    ITEM: Item,
    STUCK: Stuck,
    STARTED: Started,
    UNQUEUED: Unqueued,
}
TO_CONTAINER: Final[Mapping[str, Any]] = {
    INIT: Init,
    DENIED: Denied,
    INPUT: Input,
    BATCH: Batch,
    CANCEL: CancelInput,
    STOP: Stop,
    AGENT: StartAgent,
    UNQUEUE: Unqueue,
}
# The shape of an "obj" request, by its operation.
OBJECT_OPS: Final[Mapping[str, Any]] = {
    "open": OpenOp,
    "ephemeral": KindOp,
    "list": KindOp,
    "hold": HoldOp,
    "delete": DeleteOp,
    "abort": AbortOp,
    "d.get": KeyOp,
    "d.contains": KeyOp,
    "d.pop": KeyOp,
    "d.len": ObjectOp,
    "d.clear": ObjectOp,
    "d.put": DictPut,
    "d.update": DictUpdate,
    "d.scan": DictScan,
    "q.put": QueuePut,
    "q.get": QueueGet,
    "q.len": QueueLen,
    "q.next": QueueNext,
    "q.clear": QueueClear,
}
