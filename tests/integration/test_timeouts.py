"""Per-attempt timeouts and retries, enforced by the scheduler (T1, T3, R2, R4)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from ketch.exception import FunctionTimeoutError
from supports.timeouts import app, async_sleeper, busy_loop, flaky


@pytest.mark.spec("T3")
def test_timeouts_interrupt_async_and_sync_code(server: object) -> None:
    with app.run(show_logs=False):
        for fn in (async_sleeper, busy_loop):
            started = time.monotonic()
            with pytest.raises(FunctionTimeoutError):
                fn.remote(30)
            # The limit is 2 s; the error comes within about a second of it.
            assert time.monotonic() - started < 4.5
        # The container stuck in a busy loop was replaced: the function still answers.
        assert async_sleeper.remote(0) == "finished"


@pytest.mark.spec("R2")
def test_retries_wait_the_backoff_delays(server: object, tmp_path: Path) -> None:
    trace = tmp_path / "attempts"
    with app.run(show_logs=False):
        assert flaky.remote(str(trace)) == 3
    stamps = [float(x) for x in trace.read_text().split()]
    assert len(stamps) == 3
    gaps = [b - a for a, b in zip(stamps, stamps[1:], strict=False)]
    assert gaps[0] >= 0.5 and gaps[1] >= 1.0, gaps
