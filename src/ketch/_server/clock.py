"""The scheduler's sense of time, injected so that unit tests can drive it by hand.

Every deadline, backoff, idle window and timer of the scheduler is read from one `Clock`;
the server uses `SystemClock`, a unit test a fake one that it moves forward itself.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any, Protocol


class TimerHandle(Protocol):
    def cancel(self) -> None: ...


class Clock(Protocol):
    def monotonic(self) -> float:
        """Seconds on a clock that never goes back (deadlines, windows, ages)."""
        ...

    def time(self) -> float:
        """Wall-clock seconds since the epoch (only for showing when something started)."""
        ...

    def call_later(self, delay: float, callback: Callable[..., object], *args: Any) -> TimerHandle:
        """Run `callback(*args)` once, `delay` seconds from now."""
        ...


class SystemClock:
    """The real clocks, and timers on the running event loop."""

    # The builtins themselves, not wrappers: the scheduler reads the clock on every input.
    monotonic = staticmethod(time.monotonic)
    time = staticmethod(time.time)

    def call_later(
        self, delay: float, callback: Callable[..., object], *args: Any
    ) -> asyncio.TimerHandle:
        return asyncio.get_running_loop().call_later(delay, callback, *args)
