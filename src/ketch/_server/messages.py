"""The shapes of the call-protocol messages the server accepts from SDK clients and
containers.

Every message a peer sends is checked here before the scheduler or the objects module
sees it: one of the wrong shape raises `BadMessage` (the connection answers it with an
error and goes on) and changes nothing. Fields a type does not name are dropped. The
options a class handle overrides are held to the rules the SDK applies when they are set.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, NotRequired

from pydantic import AfterValidator, Field, TypeAdapter, ValidationError

# pydantic needs this TypedDict before Python 3.12
from typing_extensions import TypedDict

from ketch._utils.tracecontext import is_traceparent
from ketch.exception import InvalidError

__all__ = ["BadMessage", "check_client", "check_container", "check_hello"]


class BadMessage(Exception):
    """A message that does not have the shape its type needs."""


# SQLite keeps integers in 64 bits; a larger one would fail deep inside a query.
Count = Annotated[int, Field(ge=0, le=2**63 - 1)]
Seconds = Annotated[float, Field(ge=0, le=10**9, allow_inf_nan=False)]
Rid = int | None


class ErrorPayload(TypedDict):
    exc: bytes | None
    exc_by_value: NotRequired[bytes | None]
    repr: str
    tb: str


# -- first frame ---------------------------------------------------------------------
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


_hello: TypeAdapter[ClientHello | ContainerHello] = TypeAdapter(
    Annotated[ClientHello | ContainerHello, Field(discriminator="role")]
)


# -- from SDK clients ----------------------------------------------------------------
def _traceparent(value: str) -> str:
    if not is_traceparent(value):
        raise ValueError("not a W3C traceparent (00-<32 hex>-<16 hex>-<2 hex>)")
    return value


class Request(TypedDict):
    args: bytes
    method: str | None
    params: bytes | None
    options: NotRequired[dict[str, Any] | None]
    # The caller's OpenTelemetry context (O5), when its program has one.
    traceparent: NotRequired[Annotated[str, AfterValidator(_traceparent)]]


class Call(TypedDict):
    t: Literal["call"]
    fid: str
    iid: str
    kind: Literal["call", "gen"]
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


class AppRef(TypedDict):
    t: Literal["logs", "lease"]
    app_id: str


class Ping(TypedDict):
    t: Literal["ping"]
    rid: NotRequired[Rid]


class Obj(TypedDict):
    t: Literal["obj"]
    op: str
    rid: NotRequired[Rid]
    op_id: NotRequired[str | None]
    wid: NotRequired[str | None]


_client: dict[str, TypeAdapter[Any]] = {
    "call": TypeAdapter(Call),
    "spawn": TypeAdapter(Spawn),
    "get": TypeAdapter(Get),
    "lookup": TypeAdapter(Lookup),
    "cancel": TypeAdapter(Cancel),
    "logs": TypeAdapter(AppRef),
    "lease": TypeAdapter(AppRef),
    "ping": TypeAdapter(Ping),
}


# -- Dict and Queue requests ("obj"), by operation -------------------------------------
class _Op(TypedDict):
    t: Literal["obj"]
    op: str
    rid: NotRequired[Rid]
    op_id: NotRequired[str | None]
    wid: NotRequired[str | None]


class OpenOp(_Op):
    kind: str
    environment: str
    name: NotRequired[str | None]
    create: NotRequired[bool]
    exclusive: NotRequired[bool]


class KindOp(_Op):
    kind: str
    environment: str


class HoldOp(_Op):
    object_id: str


class DeleteOp(_Op):
    object_id: NotRequired[str | None]
    kind: NotRequired[str]
    environment: NotRequired[str]
    name: NotRequired[str]
    allow_missing: NotRequired[bool]


def _delete_target(msg: DeleteOp) -> DeleteOp:
    if not msg.get("object_id") and not all(k in msg for k in ("kind", "environment", "name")):
        raise ValueError("a delete names an object_id, or a kind, environment and name")
    return msg


class AbortOp(TypedDict):
    t: Literal["obj"]
    op: Literal["abort"]
    wid: str | None
    rid: NotRequired[Rid]


class ObjectOp(_Op):
    object_id: str


class KeyOp(ObjectOp):
    key: bytes


class DictPut(KeyOp):
    value: bytes
    skip_if_exists: NotRequired[bool]


class DictUpdate(ObjectOp):
    pairs: list[Annotated[list[bytes], Field(min_length=2, max_length=2)]]


class DictScan(ObjectOp):
    after: NotRequired[Count]
    limit: NotRequired[Annotated[int, Field(ge=1, le=10_000)]]
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
    n: NotRequired[Annotated[int, Field(ge=1, le=2**31)]]
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


_ops: dict[str, TypeAdapter[Any]] = {
    "open": TypeAdapter(OpenOp),
    "ephemeral": TypeAdapter(KindOp),
    "list": TypeAdapter(KindOp),
    "hold": TypeAdapter(HoldOp),
    "delete": TypeAdapter(Annotated[DeleteOp, AfterValidator(_delete_target)]),
    "abort": TypeAdapter(AbortOp),
    "d.get": TypeAdapter(KeyOp),
    "d.contains": TypeAdapter(KeyOp),
    "d.pop": TypeAdapter(KeyOp),
    "d.len": TypeAdapter(ObjectOp),
    "d.clear": TypeAdapter(ObjectOp),
    "d.put": TypeAdapter(DictPut),
    "d.update": TypeAdapter(DictUpdate),
    "d.scan": TypeAdapter(DictScan),
    "q.put": TypeAdapter(QueuePut),
    "q.get": TypeAdapter(QueueGet),
    "q.len": TypeAdapter(QueueLen),
    "q.next": TypeAdapter(QueueNext),
    "q.clear": TypeAdapter(QueueClear),
}


# -- from containers -----------------------------------------------------------------
class Ready(TypedDict):
    t: Literal["ready"]
    web_addr: NotRequired[str | None]


class StartupFailed(TypedDict):
    t: Literal["startup_failed"]
    error: ErrorPayload


class Out(TypedDict):
    t: Literal["out"]
    iid: str
    ok: bool
    payload: NotRequired[bytes | None]
    error: NotRequired[ErrorPayload | None]


def _outcome(msg: Out) -> Out:
    if not msg["ok"] and msg.get("error") is None:
        raise ValueError("a failed output carries its error")
    return msg


class Item(TypedDict):
    t: Literal["item"]
    iid: str
    payload: bytes


class Stuck(TypedDict):
    t: Literal["stuck"]
    iid: str


_container: dict[str, TypeAdapter[Any]] = {
    "ready": TypeAdapter(Ready),
    "startup_failed": TypeAdapter(StartupFailed),
    "out": TypeAdapter(Annotated[Out, AfterValidator(_outcome)]),
    "item": TypeAdapter(Item),
    "stuck": TypeAdapter(Stuck),
}


# -- checks --------------------------------------------------------------------------
def _check(adapters: dict[str, TypeAdapter[Any]], key: Any, msg: Any, what: str) -> Any:
    adapter = adapters.get(key) if isinstance(key, str) else None
    if adapter is None:
        raise BadMessage(f"unknown {what} {repr(key)[:60]}")
    try:
        return adapter.validate_python(msg, strict=True)
    except ValidationError as exc:
        raise BadMessage(_summary(key, exc)) from None


def _summary(kind: str, exc: ValidationError) -> str:
    problems = []
    for err in exc.errors(include_url=False, include_input=False)[:3]:
        where = ".".join(str(p) for p in err["loc"]) or "message"
        problems.append(f"{where}: {err['msg']}")
    return f"malformed {kind!r} message: " + "; ".join(problems)


def check_hello(batch: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The hello of a first frame, or None when the frame is anything else."""
    if len(batch) != 1:
        return None
    try:
        hello: dict[str, Any] = dict(_hello.validate_python(batch[0], strict=True))
    except ValidationError:
        return None
    return hello


def check_client(msg: dict[str, Any]) -> dict[str, Any]:
    """A client's message, checked (BadMessage otherwise)."""
    t = msg.get("t")
    if t == "obj":
        checked: dict[str, Any] = _check(_ops, msg.get("op"), msg, "object operation")
        return checked
    checked = _check(_client, t, msg, "message type")
    req = checked.get("req")
    if req is not None and req.get("options"):
        try:
            check_overrides(req["options"])
        except InvalidError as exc:
            raise BadMessage(f"malformed {t!r} message: req.options: {exc}") from None
    return checked


def check_container(msg: dict[str, Any]) -> dict[str, Any]:
    """A container's message, checked (BadMessage otherwise)."""
    checked: dict[str, Any] = _check(_container, msg.get("t"), msg, "message type")
    return checked


# -- per-handle options (Cls.with_options, with_concurrency, with_batching) ------------
class NamedSecret(TypedDict):
    kind: Literal["named"]
    name: str
    environment: NotRequired[str | None]
    required_keys: NotRequired[list[str]]


class InlineSecret(TypedDict):
    kind: Literal["inline"]
    values: dict[str, str]


_secrets: TypeAdapter[list[NamedSecret | InlineSecret]] = TypeAdapter(
    list[Annotated[NamedSecret | InlineSecret, Field(discriminator="kind")]]
)

_PLAIN = (
    "cpu",
    "memory",
    "gpu",
    "timeout",
    "startup_timeout",
    "min_containers",
    "max_containers",
    "buffer_containers",
    "scaledown_window",
)
_ALLOWED = frozenset(_PLAIN) | {
    "retries",
    "secrets",
    "max_inputs",
    "target_inputs",
    "batch_max_size",
    "batch_wait_ms",
}


def check_overrides(options: dict[str, Any]) -> None:
    """InvalidError unless `options` is what a class handle's with_* methods send."""
    from ketch._utils.options import (
        validate_batched,
        validate_concurrent,
        validate_function_options,
    )
    from ketch.retries import Retries
    from ketch.secret import _check_values

    unknown = sorted(set(options) - _ALLOWED)
    if unknown:
        raise InvalidError(f"unknown option(s) {', '.join(map(repr, unknown))}")
    plain = {k: options[k] for k in _PLAIN if options.get(k) is not None}
    validate_function_options(plain, is_generator=False, is_web=False, where="options")
    retries = options.get("retries")
    if retries is not None:
        if not isinstance(retries, dict) or not all(isinstance(k, str) for k in retries):
            raise InvalidError(f"retries must be a Retries policy, got {retries!r}")
        try:
            Retries(**retries)
        except TypeError as exc:
            raise InvalidError(f"retries: {exc}") from None
    if options.get("max_inputs") is not None:
        validate_concurrent(options["max_inputs"], options.get("target_inputs"))
    elif options.get("target_inputs") is not None:
        raise InvalidError("target_inputs goes with max_inputs")
    if options.get("batch_max_size") is not None or options.get("batch_wait_ms") is not None:
        # Both are sent together; a missing one fails the check as a non-int would.
        validate_batched(options.get("batch_max_size", -1), options.get("batch_wait_ms", -1))
    if options.get("secrets") is not None:
        try:
            secrets = _secrets.validate_python(options["secrets"], strict=True)
        except ValidationError as exc:
            raise InvalidError(_summary("secrets", exc)) from None
        for secret in secrets:
            if secret["kind"] == "inline":
                _check_values(secret["values"], "an inline secret")
