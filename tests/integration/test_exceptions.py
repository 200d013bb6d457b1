"""Remote failures reach the caller as their own type, with the remote traceback (B7)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from ketch.exception import Error, ExecutionError, remote_traceback_of
from supports.errors import (
    AppError,
    app,
    raise_app_error,
    raise_local_class,
    raise_two_part,
    raise_value,
)


@pytest.fixture(scope="module")
def running(ketch_server: object) -> Iterator[None]:
    with app.run(show_logs=False):
        yield


def _notes(exc: BaseException) -> str:
    return "\n".join(getattr(exc, "__notes__", []))


@pytest.mark.spec("B7")
def test_builtin_exception_keeps_type_message_and_traceback(server: object, running: None) -> None:
    with pytest.raises(ValueError) as info:
        raise_value.remote("no good at all")
    exc = info.value
    assert type(exc) is ValueError
    assert exc.args == ("no good at all",)
    tb = getattr(exc, "__ketch_remote_traceback__", "")
    assert remote_traceback_of(exc) == tb
    # The remote traceback shows the user's own frame: file, function and line of code.
    assert "supports/errors.py" in tb and "raise_value" in tb
    assert "raise ValueError(message)" in tb
    assert "ValueError: no good at all" in tb
    assert "raise_value" in _notes(exc)


@pytest.mark.spec("B7")
def test_app_defined_exception_arrives_as_its_class(server: object, running: None) -> None:
    with pytest.raises(AppError) as info:
        raise_app_error.remote("broken", 7)
    assert type(info.value) is AppError
    assert info.value.code == 7
    assert "raise_app_error" in remote_traceback_of(info.value)


@pytest.mark.spec("B7")
@pytest.mark.parametrize(
    ("fn", "text"),
    [(raise_two_part, "left-half/right-half"), (raise_local_class, "locked away")],
    ids=["init-signature", "unpicklable-class"],
)
def test_exception_that_cannot_be_rebuilt_becomes_execution_error(
    server: object, running: None, fn: object, text: str
) -> None:
    with pytest.raises(ExecutionError) as info:
        fn.remote()  # type: ignore[attr-defined]
    exc = info.value
    assert isinstance(exc, Error)
    # Its message holds the original's repr, and its traceback text the remote frames.
    assert text in str(exc)
    assert exc.remote_traceback is not None
    assert fn.tag in exc.remote_traceback  # type: ignore[attr-defined]
    assert text in exc.remote_traceback
    assert exc.remote_traceback in remote_traceback_of(exc)
