"""The exception tree of ketch, shaped like ``modal.exception`` so user code can catch either."""

from __future__ import annotations

import contextlib
import os
import sys
import warnings

__all__ = [
    "AlreadyExistsError",
    "AuthError",
    "ClientClosed",
    "ConnectionError",
    "DeprecationError",
    "DeserializationError",
    "Error",
    "ExecTimeoutError",
    "ExecutionError",
    "FunctionTimeoutError",
    "InputCancellation",
    "InternalFailure",
    "InvalidError",
    "KetchDeprecationWarning",
    "NotFoundError",
    "OutputExpiredError",
    "PendingDeprecationError",
    "RemoteError",
    "RequestSizeError",
    "ResourceExhaustedError",
    "SandboxFilesystemDirectoryNotEmptyError",
    "SandboxFilesystemError",
    "SandboxFilesystemFileTooLargeError",
    "SandboxFilesystemIsADirectoryError",
    "SandboxFilesystemNotADirectoryError",
    "SandboxFilesystemNotFoundError",
    "SandboxFilesystemPathAlreadyExistsError",
    "SandboxFilesystemPermissionError",
    "SandboxTerminatedError",
    "SandboxTimeoutError",
    "SerializationError",
    "TimeoutError",
    "VersionError",
    "attach_remote_traceback",
    "deprecation_warning",
    "remote_traceback_of",
]


class Error(Exception):
    """Base class for every error ketch raises on purpose."""


class InvalidError(Error):
    """A value, argument or combination of options is not allowed."""


class NotFoundError(Error):
    """A named object (app, function, secret, dict, queue, volume, call) does not exist."""


class AlreadyExistsError(Error):
    """An object with that name already exists and may not be replaced."""


class ExecutionError(Error):
    """Running user code failed in a way that cannot be reported as the user's own exception.

    When a remote exception cannot be unpickled on the caller's side, this error carries
    its ``repr`` as the message and the remote traceback text in ``remote_traceback``.
    """

    remote_traceback: str | None

    def __init__(self, *args: object, remote_traceback: str | None = None) -> None:
        super().__init__(*args)
        # Kept out of ``args`` so that pickling (cls(*args) then __dict__) round-trips it.
        self.remote_traceback = remote_traceback


class RemoteError(Error):
    """The server or a container reported an error that is not the user's exception."""


class DeprecationError(Error):
    """A feature that has been removed was used."""


class PendingDeprecationError(Error):
    """A feature that is going away was used in a way that can no longer be supported."""


class AuthError(Error):
    """The server refused the credentials, or none were configured."""


class ConnectionError(Error):
    """The server could not be reached (shadows the builtin, as ``modal.exception`` does)."""


class VersionError(Error):
    """The client and the server speak incompatible protocol versions."""


class SerializationError(Error):
    """An argument or a return value could not be pickled."""


class DeserializationError(Error):
    """An argument or a return value could not be unpickled."""


class RequestSizeError(Error):
    """A request or payload is larger than the server accepts."""


class ResourceExhaustedError(Error):
    """A bounded resource is full (a function's queue of waiting inputs); retry later."""


class InternalFailure(Error):
    """ketch itself failed; retrying may help."""


class ClientClosed(Error):
    """The client was used after it had been closed."""


class TimeoutError(Error):
    """Base class for ketch's timeouts (distinct from the builtin ``TimeoutError``)."""


class FunctionTimeoutError(TimeoutError):
    """An input ran past its function's ``timeout`` on its last attempt."""


class OutputExpiredError(TimeoutError):
    """The result of a spawned call was asked for after it had expired."""


class SandboxTimeoutError(TimeoutError):
    """A sandbox ran past its timeout."""


class SandboxTerminatedError(Error):
    """A sandbox was terminated before it finished."""


class ExecTimeoutError(TimeoutError):
    """A process in a sandbox ran past its timeout."""


class SandboxFilesystemError(Error):
    """A file operation in a sandbox failed (`Sandbox.filesystem`)."""


class SandboxFilesystemNotFoundError(SandboxFilesystemError):
    """No such file or directory in the sandbox."""


class SandboxFilesystemDirectoryNotEmptyError(SandboxFilesystemError):
    """A directory to remove is not empty (remove it with recursive=True)."""


class SandboxFilesystemIsADirectoryError(SandboxFilesystemError):
    """A file operation met a directory."""


class SandboxFilesystemNotADirectoryError(SandboxFilesystemError):
    """A directory operation met something else, or a path's parent is not a directory."""


class SandboxFilesystemPermissionError(SandboxFilesystemError):
    """The sandbox's user may not do that there (its root filesystem is read-only)."""


class SandboxFilesystemPathAlreadyExistsError(SandboxFilesystemError):
    """The path exists already."""


class SandboxFilesystemFileTooLargeError(SandboxFilesystemError):
    """A file is larger than one whole-file operation carries."""


class InputCancellation(BaseException):
    """Raised inside user code when its input is cancelled.

    A ``BaseException`` so that a bare ``except Exception`` in user code does not swallow it.
    """


class KetchDeprecationWarning(DeprecationWarning):
    """Warns about a deprecated name or parameter; the text starts with the deprecation date."""


# Python hides DeprecationWarning outside ``__main__`` by default, which would hide these from
# code run by ``ketch run`` / ``ketch serve``. Respect -W / PYTHONWARNINGS when they are given.
if not sys.warnoptions:
    warnings.filterwarnings("default", category=KetchDeprecationWarning)


_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep


def _stacklevel_outside_ketch() -> int:
    """Return the ``stacklevel`` that points a warning, issued by our caller, at user code.

    Walks out of every frame that belongs to the ketch package, so a warning raised deep in
    option validation is attributed to the user's decorator line.
    """
    frame = sys._getframe(1)
    level = 1
    while frame is not None and frame.f_code.co_filename.startswith(_PACKAGE_DIR):
        frame = frame.f_back  # type: ignore[assignment]
        level += 1
    return level if frame is not None else 1


def user_warning(message: str) -> None:
    """Warn (UserWarning) at the first caller outside the ketch package."""
    warnings.warn(message, UserWarning, stacklevel=_stacklevel_outside_ketch())


def deprecation_warning(date: tuple[int, int, int], message: str) -> None:
    """Emit a :class:`KetchDeprecationWarning` whose text starts with ``date`` (``YYYY-MM-DD: ``).

    The warning is attributed to the first caller outside the ketch package.
    """
    year, month, day = date
    when = f"{year:04d}-{month:02d}-{day:02d}"
    warnings.warn(
        f"{when}: {message}",
        KetchDeprecationWarning,
        stacklevel=_stacklevel_outside_ketch(),
    )


_REMOTE_TB_ATTR = "__ketch_remote_traceback__"


def attach_remote_traceback(exc: BaseException, tb_text: str) -> BaseException:
    """Attach the traceback text of a remote failure to ``exc`` and return ``exc``.

    The text is added as a note (shown under the local traceback) and kept on the attribute
    ``__ketch_remote_traceback__``. Attaching the same text twice adds one note.
    """
    if getattr(exc, _REMOTE_TB_ATTR, None) == tb_text:
        return exc
    # A type that refuses new attributes can still carry the note.
    with contextlib.suppress(AttributeError):
        setattr(exc, _REMOTE_TB_ATTR, tb_text)
    # add_note fails when user code replaced __notes__ with something that is not a list.
    with contextlib.suppress(TypeError):
        exc.add_note("Remote traceback:\n" + tb_text)
    return exc


def remote_traceback_of(exc: BaseException) -> str | None:
    """Return the remote traceback text attached to ``exc``, if any."""
    text = getattr(exc, _REMOTE_TB_ATTR, None)
    if isinstance(text, str):
        return text
    if isinstance(exc, ExecutionError):
        return exc.remote_traceback
    return None
