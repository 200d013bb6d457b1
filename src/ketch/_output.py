"""`ketch.enable_output()`: what a plain script shows of its app while it starts."""

from __future__ import annotations

import contextlib
import sys
import threading
from collections.abc import Callable, Iterator

__all__ = ["deploy_log", "enable_output"]

# A count, not a flag: nested blocks (and threads sharing one) end independently. Not a
# contextvar: the SDK's event loop runs in a thread of its own, which reads it.
_lock = threading.Lock()
_depth = 0


@contextlib.contextmanager
def enable_output(show_progress: bool = True) -> Iterator[None]:
    """Show, in a script using `with app.run():` or `app.deploy()`, what `ketch run` shows:
    image builds and deploy progress, then the containers' output (which `app.run()`
    shows anyway unless `show_logs=False`). `show_progress` is accepted for Modal's sake."""
    global _depth
    with _lock:
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1


def _print(line: str) -> None:
    print(f"  {line}", file=sys.stderr, flush=True)


def deploy_log() -> Callable[[str], None] | None:
    """Where the deploy's progress lines go inside an enable_output() block; None outside."""
    return _print if _depth > 0 else None
