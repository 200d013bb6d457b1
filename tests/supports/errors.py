"""An app whose functions fail in the ways a caller must be able to tell apart."""

import threading

import ketch

app = ketch.App("ketch-errors")


class AppError(Exception):
    """Defined in the app module, so the caller can import it and catch it by type."""

    def __init__(self, message: str, code: int = 0) -> None:
        super().__init__(message, code)
        self.code = code


class TwoPartError(Exception):
    """Its __init__ wants two arguments but `args` holds one: unpickling it fails."""

    def __init__(self, left: str, right: str) -> None:
        super().__init__(f"{left}/{right}")


@app.function(max_containers=1)
def raise_value(message: str) -> None:
    raise ValueError(message)


@app.function(max_containers=1)
def raise_app_error(message: str, code: int) -> None:
    raise AppError(message, code)


@app.function(max_containers=1)
def raise_two_part() -> None:
    raise TwoPartError("left-half", "right-half")


@app.function(max_containers=1)
def raise_local_class() -> None:
    class HoldsALock(Exception):
        # A class that is not importable goes by value, and a lock cannot be pickled.
        guard = threading.Lock()

    raise HoldsALock("locked away")
