"""Argument, result and exception payloads: cloudpickle out, original types back in."""

from __future__ import annotations

import pickle
import sys
import traceback
import types
from typing import TYPE_CHECKING, Any

import cloudpickle

if TYPE_CHECKING:
    from ketch._utils.protocol.messages import ErrorPayload

# Types that plain pickle writes exactly as cloudpickle would, much faster (cloudpickle's
# pickler costs microseconds to set up, which adds up over a `.map` of millions of inputs).
_SCALARS = frozenset({int, float, complex, str, bytes, bytearray, bool, type(None)})
# Containers larger than this are left to cloudpickle rather than inspected item by item.
_PLAIN_LEN = 32


def _plain(obj: Any, depth: int = 0) -> bool:
    t = type(obj)
    if t in _SCALARS:
        return True
    if depth >= 3 or (t is not tuple and t is not list and t is not dict) or len(obj) > _PLAIN_LEN:
        return False
    if t is dict:
        for k, v in obj.items():
            if type(k) not in _SCALARS or (type(v) not in _SCALARS and not _plain(v, depth + 1)):
                return False
        return True
    for x in obj:  # noqa: SIM110 - a plain loop is measurably cheaper than all() here
        if type(x) not in _SCALARS and not _plain(x, depth + 1):
            return False
    return True


def dumps(obj: Any) -> bytes:
    if _plain(obj):
        return pickle.dumps(obj, protocol=5)
    data: bytes = cloudpickle.dumps(obj, protocol=5)
    return data


def loads(data: bytes) -> Any:
    return pickle.loads(data)


def dumps_by_value(obj: Any) -> bytes:
    """Pickle a function (or class) with its own module by value: the receiving side need
    not have that module (serialized=True functions, Image.run_function steps)."""
    module = sys.modules.get(getattr(obj, "__module__", ""))
    registered = False
    if module is not None and module.__name__ not in ("__main__", "builtins"):
        try:
            cloudpickle.register_pickle_by_value(module)
            registered = True
        except ValueError:
            pass
    try:
        data: bytes = cloudpickle.dumps(obj)
        return data
    finally:
        if registered and module is not None:
            cloudpickle.unregister_pickle_by_value(module)


def exception_payload(exc: BaseException, by_value: types.ModuleType | None = None) -> ErrorPayload:
    """Pickle an exception so the caller gets its original type, with the traceback text.

    The class goes by reference (the caller's own class when it has the module, so that
    `except MyError` works) and, as a fallback for callers that lack the module, by value.
    """
    tb = "".join(traceback.format_exception(type(exc), exc, _user_frames(exc.__traceback__)))
    by_ref = _try_dumps(exc)
    by_val = None
    if (
        by_value is not None
        and by_value.__name__ in sys.modules
        and type(exc).__module__ == by_value.__name__
    ):
        try:
            cloudpickle.register_pickle_by_value(by_value)
        except ValueError:
            pass
        else:
            try:
                by_val = _try_dumps(exc)
            finally:
                cloudpickle.unregister_pickle_by_value(by_value)
    return {"exc": by_ref, "exc_by_value": by_val, "repr": repr(exc), "tb": tb}


def _try_dumps(exc: BaseException) -> bytes | None:
    try:
        data: bytes = cloudpickle.dumps(exc, protocol=5)
        pickle.loads(data)  # the caller will try the same; fail here so we can send text
    except Exception:
        return None
    return data


def _user_frames(tb: types.TracebackType | None) -> types.TracebackType | None:
    """Drop the runtime's own frames from the top of a traceback."""
    while tb is not None and any(part in tb.tb_frame.f_code.co_filename for part in _INTERNAL):
        tb = tb.tb_next
    return tb


_INTERNAL = ("/ketch/_runtime/", "/concurrent/futures/", "/asyncio/")


def rebuild_exception(error: dict[str, Any]) -> BaseException:
    """The exception a caller raises for a remote failure, with the remote traceback noted."""
    from ketch.exception import ExecutionError, attach_remote_traceback

    exc: BaseException | None = None
    for key in ("exc", "exc_by_value"):
        if error.get(key) is not None:
            try:
                exc = pickle.loads(error[key])
                break
            except Exception:
                exc = None
    tb = error.get("tb") or ""
    if not isinstance(exc, BaseException):
        exc = ExecutionError(
            f"remote error that could not be rebuilt here: {error.get('repr')}",
            remote_traceback=tb,
        )
    if tb:
        attach_remote_traceback(exc, tb)
    return exc


# A class's parameters (S6): the SDK binding `Model(x=1)` and the gateway reading `?x=1`
# must make the same bytes, since they name the pool; so there is one encoder, here.
def encode_params(params: dict[str, Any]) -> bytes | None:
    """A stable encoding: equal parameter sets give equal bytes, hence one pool."""
    if not params:
        return None
    return pickle.dumps(tuple(sorted(params.items())), protocol=5)


def decode_params(blob: bytes | None) -> dict[str, Any]:
    """The parameter set `encode_params` made (its sorted pairs, back into a dict)."""
    if not blob:
        return {}
    return dict(pickle.loads(blob))
