"""Decorators that annotate a function before `@app.function` / `@app.cls` takes it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, ParamSpec, TypeVar, cast

from ketch._utils.options import validate_batched, validate_concurrent
from ketch.exception import InvalidError

P = ParamSpec("P")
R = TypeVar("R")


class PartialFunction(Generic[P, R]):
    """A raw function plus the flags of the decorators stacked under `@app.function`
    (typed as the function, so `@app.function` above it keeps its signature)."""

    def __init__(self, raw_f: Callable[P, R], flags: dict[str, Any]) -> None:
        self.raw_f = raw_f
        self.flags = flags

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        return self.raw_f(*args, **kwargs)

    def __get__(self, obj: Any, owner: type | None = None) -> Any:
        # A web decorator on a method of an @app.cls class: instances get a bound method.
        if obj is None:
            return self
        return self.raw_f.__get__(obj, owner)


def wrap(target: Any, decorator: str, **flags: Any) -> PartialFunction[..., Any]:
    from ketch.cls import Cls
    from ketch.functions import Function

    if isinstance(target, Function | Cls):
        raise InvalidError(
            f"@{decorator} must sit below @app.function / @app.cls, not above it: "
            f"write @app.function() first, then @{decorator}(...) on the next line"
        )
    if isinstance(target, PartialFunction):
        clash = set(flags) & set(target.flags)
        if clash:
            raise InvalidError(f"@{decorator} is applied twice ({', '.join(sorted(clash))})")
        return PartialFunction(target.raw_f, {**target.flags, **flags})
    if not callable(target):
        raise InvalidError(f"@{decorator} decorates a function or class, not {target!r}")
    return PartialFunction(target, flags)


def concurrent(
    _warn_parentheses_missing: Any = None,
    *,
    max_inputs: int | None = None,
    target_inputs: int | None = None,
) -> Callable[[Callable[P, R]], PartialFunction[P, R]]:
    """Let one container run up to `max_inputs` inputs at once (aiming at `target_inputs`)."""
    if _warn_parentheses_missing is not None:
        raise InvalidError("@concurrent takes keyword arguments: @concurrent(max_inputs=N)")
    values = validate_concurrent(max_inputs, target_inputs)

    def deco(f: Callable[P, R]) -> PartialFunction[P, R]:
        return cast("PartialFunction[P, R]", wrap(f, "concurrent", concurrent=values))

    return deco


def batched(
    _warn_parentheses_missing: Any = None, *, max_batch_size: int, wait_ms: int
) -> Callable[[Callable[..., Any]], PartialFunction[..., Any]]:
    """Group inputs into lists of up to `max_batch_size`, waiting at most `wait_ms`."""
    if _warn_parentheses_missing is not None:
        raise InvalidError("@batched takes keyword arguments: @batched(max_batch_size=, wait_ms=)")
    values = validate_batched(max_batch_size, wait_ms)

    # Untyped on purpose: callers pass one item where the function takes a list of them,
    # which a ParamSpec cannot say.
    def deco(f: Callable[..., Any]) -> PartialFunction[..., Any]:
        return wrap(f, "batched", batched=values)

    return deco
