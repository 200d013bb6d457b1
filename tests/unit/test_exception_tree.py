"""The exception tree, dated deprecation warnings and remote tracebacks."""

from __future__ import annotations

import builtins
import pickle
import warnings

import pytest

from ketch import exception
from ketch.exception import (
    Error,
    ExecutionError,
    FunctionTimeoutError,
    InputCancellation,
    InvalidError,
    KetchDeprecationWarning,
    OutputExpiredError,
    SandboxTimeoutError,
    attach_remote_traceback,
    deprecation_warning,
    remote_traceback_of,
)

pytestmark = pytest.mark.spec("B7")

_CLASSES = [
    getattr(exception, name)
    for name in exception.__all__
    if isinstance(getattr(exception, name), type)
    and issubclass(getattr(exception, name), BaseException)
]


@pytest.mark.parametrize(
    "name",
    [
        "InvalidError",
        "NotFoundError",
        "AlreadyExistsError",
        "ExecutionError",
        "RemoteError",
        "DeprecationError",
        "AuthError",
        "ConnectionError",
        "TimeoutError",
        "VersionError",
        "SerializationError",
        "DeserializationError",
    ],
)
def test_error_subclasses_share_one_root(name: str) -> None:
    assert issubclass(getattr(exception, name), Error)


def test_timeouts_hang_under_ketch_timeout_error() -> None:
    for cls in (FunctionTimeoutError, OutputExpiredError, SandboxTimeoutError):
        assert issubclass(cls, exception.TimeoutError)
        assert issubclass(cls, Error)
    # ketch's TimeoutError is its own: the builtin one means "not ready yet" (B3).
    assert not issubclass(exception.TimeoutError, builtins.TimeoutError)
    assert not issubclass(exception.ConnectionError, builtins.ConnectionError)


def test_input_cancellation_escapes_except_exception() -> None:
    assert issubclass(InputCancellation, BaseException)
    assert not issubclass(InputCancellation, Exception)
    with pytest.raises(InputCancellation):
        try:
            raise InputCancellation("cancelled")
        except Exception:  # pragma: no cover - must not be reached
            pytest.fail("InputCancellation was caught by except Exception")


def test_all_is_sorted() -> None:
    assert list(exception.__all__) == sorted(exception.__all__)


@pytest.mark.parametrize("cls", _CLASSES, ids=lambda c: c.__name__)
def test_every_exception_pickles(cls: type[BaseException]) -> None:
    exc = cls("boom")
    again = pickle.loads(pickle.dumps(exc))
    assert type(again) is cls
    assert again.args == ("boom",)


def test_execution_error_keeps_remote_traceback_through_pickle() -> None:
    exc = ExecutionError("BadClass('x')", remote_traceback="Traceback ...\nBadClass: x")
    again = pickle.loads(pickle.dumps(exc))
    assert str(again) == "BadClass('x')"
    assert again.remote_traceback == "Traceback ...\nBadClass: x"
    assert remote_traceback_of(again) == "Traceback ...\nBadClass: x"
    assert ExecutionError("plain").remote_traceback is None


@pytest.mark.spec("A4")
def test_deprecation_warning_is_dated_and_points_at_the_caller() -> None:
    with pytest.warns(KetchDeprecationWarning, match=r"^2024-04-01: use new_thing") as record:
        deprecation_warning((2024, 4, 1), "use new_thing instead")
    assert issubclass(KetchDeprecationWarning, DeprecationWarning)
    assert record[0].filename == __file__


def test_deprecation_warning_is_an_error_under_the_test_config() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(KetchDeprecationWarning):
            deprecation_warning((2025, 2, 24), "old")


def test_attach_remote_traceback_adds_a_note_and_an_attribute() -> None:
    exc = ValueError("bad input")
    tb = 'Traceback (most recent call last):\n  File "app.py", line 3\nValueError: bad input'
    assert attach_remote_traceback(exc, tb) is exc
    assert exc.__ketch_remote_traceback__ == tb  # type: ignore[attr-defined]
    assert remote_traceback_of(exc) == tb
    assert exc.__notes__ == ["Remote traceback:\n" + tb]
    attach_remote_traceback(exc, tb)
    assert len(exc.__notes__) == 1, "attaching the same text twice must add one note"


def test_attach_remote_traceback_survives_odd_exceptions() -> None:
    exc = InvalidError("x")
    exc.__notes__ = "not a list"  # type: ignore[assignment]
    attach_remote_traceback(exc, "tb")
    assert remote_traceback_of(exc) == "tb"
    assert remote_traceback_of(ValueError("none")) is None


def test_attached_traceback_travels_with_pickle() -> None:
    exc = attach_remote_traceback(KeyError("k"), "remote tb")
    again = pickle.loads(pickle.dumps(exc))
    assert remote_traceback_of(again) == "remote tb"
    assert again.__notes__ == ["Remote traceback:\nremote tb"]
