"""The server's checks of the call-protocol messages SDK clients and containers send, against
their types (`ketch._utils.protocol.messages`).

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

from ketch._utils.protocol import messages as m
from ketch._utils.tracecontext import is_traceparent
from ketch.exception import InvalidError

__all__ = ["BadMessage", "check_client", "check_container", "check_hello"]


class BadMessage(Exception):
    """A message that does not have the shape its type needs."""


_hello: TypeAdapter[m.ClientHello | m.ContainerHello] = TypeAdapter(
    Annotated[m.ClientHello | m.ContainerHello, Field(discriminator="role")]
)


# -- rules a message's type cannot say -----------------------------------------------
def _outcome(msg: m.Out) -> m.Out:
    if not msg["ok"] and msg.get("error") is None:
        raise ValueError("a failed output carries its error")
    return msg


def _delete_target(msg: m.DeleteOp) -> m.DeleteOp:
    if not msg.get("object_id") and not all(k in msg for k in ("kind", "environment", "name")):
        raise ValueError("a delete names an object_id, or a kind, environment and name")
    return msg


_RULES: dict[Any, Any] = {m.Out: _outcome, m.DeleteOp: _delete_target}


def _adapters(types: Any, skip: frozenset[str] = frozenset()) -> dict[str, TypeAdapter[Any]]:
    adapters: dict[str, TypeAdapter[Any]] = {}
    for key, tp in types.items():
        if key in skip:
            continue
        rule = _RULES.get(tp)
        adapters[key] = TypeAdapter(Annotated[tp, AfterValidator(rule)] if rule else tp)
    return adapters


# The hello is checked on its own (check_hello); an "obj" request by its operation.
_client = _adapters(m.FROM_CLIENT, frozenset({m.HELLO, m.OBJ}))
_ops = _adapters(m.OBJECT_OPS)
_container = _adapters(m.FROM_CONTAINER, frozenset({m.HELLO}))


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


def check_hello(batch: list[dict[str, Any]]) -> m.ClientHello | m.ContainerHello | None:
    """The hello of a first frame, or None when the frame is anything else."""
    if len(batch) != 1:
        return None
    try:
        return _hello.validate_python(batch[0], strict=True)
    except ValidationError:
        return None


def check_client(msg: dict[str, Any]) -> dict[str, Any]:
    """A client's message, checked (BadMessage otherwise)."""
    t = msg.get("t")
    if t == m.OBJ:
        checked: dict[str, Any] = _check(_ops, msg.get("op"), msg, "object operation")
        return checked
    checked = _check(_client, t, msg, "message type")
    req = checked.get("req")
    if req is not None:
        _check_request(t, req)
    return checked


def _check_request(t: Any, req: m.Request) -> None:
    traceparent = req.get("traceparent")
    if traceparent is not None and not is_traceparent(traceparent):
        raise BadMessage(
            f"malformed {t!r} message: req.traceparent: "
            "not a W3C traceparent (00-<32 hex>-<16 hex>-<2 hex>)"
        )
    options = req.get("options")
    if options:
        try:
            check_overrides(options)
        except InvalidError as exc:
            raise BadMessage(f"malformed {t!r} message: req.options: {exc}") from None


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
    from ketch._utils.env_values import check_values
    from ketch._utils.options import (
        validate_batched,
        validate_concurrent,
        validate_function_options,
    )
    from ketch.retries import Retries

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
                check_values(secret["values"], "an inline secret")
