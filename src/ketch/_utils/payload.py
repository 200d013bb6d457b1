"""Argument, result and exception payloads: cloudpickle out, original types back in."""

from __future__ import annotations

import pickle
import sys
import traceback
import types
from typing import Any

import cloudpickle


def dumps(obj: Any) -> bytes:
    return cloudpickle.dumps(obj, protocol=5)


def loads(data: bytes) -> Any:
    return pickle.loads(data)


def exception_payload(exc: BaseException, by_value: types.ModuleType | None = None) -> dict[str, Any]:
    """Pickle an exception so the caller gets its original type, with the traceback text.

    Classes defined in the user's app module are pickled by value, so that a caller that
    never imported the module (another process, another machine) can still rebuild them.
    """
    tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    registered = False
    if by_value is not None and by_value.__name__ in sys.modules:
        try:
            cloudpickle.register_pickle_by_value(by_value)
            registered = True
        except ValueError:
            pass
    try:
        data: bytes | None = cloudpickle.dumps(exc, protocol=5)
        pickle.loads(data)  # the caller will try the same; fail here so we can send text
    except Exception:
        data = None
    finally:
        if registered and by_value is not None:
            cloudpickle.unregister_pickle_by_value(by_value)
    return {"exc": data, "repr": repr(exc), "tb": tb}


def rebuild_exception(error: dict[str, Any]) -> BaseException:
    """The exception a caller raises for a remote failure, with the remote traceback noted."""
    from ketch.exception import ExecutionError, attach_remote_traceback

    exc: BaseException | None = None
    if error.get("exc") is not None:
        try:
            exc = pickle.loads(error["exc"])
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
