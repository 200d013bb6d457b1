"""Per-attempt timeouts and retries, enforced by the scheduler (T1, T3, R2, R4)."""

from __future__ import annotations

import itertools
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
    gaps = [b - a for a, b in itertools.pairwise(stamps)]
    assert gaps[0] >= 0.5 and gaps[1] >= 1.0, gaps


@pytest.mark.spec("R3")
def test_map_retries_each_input_on_its_own(server: object, tmp_path: Path) -> None:
    from supports.timeouts import map_item

    trace = tmp_path / "map"
    with app.run(show_logs=False):
        assert list(map_item.map([str(trace)] * 6, range(6))) == [i * 10 for i in range(6)]
    counts = trace.read_text().split()
    assert counts.count("3") == 3
    assert all(counts.count(str(i)) == 1 for i in range(6) if i != 3)


@pytest.mark.spec("R4")
def test_last_exception_reaches_the_caller_after_retries(server: object, tmp_path: Path) -> None:
    from supports.timeouts import CustomRetryError, always_fails

    trace = tmp_path / "fails"
    with app.run(show_logs=False), pytest.raises(CustomRetryError, match="still failing"):
        always_fails.remote(str(trace))
    assert trace.read_text().split() == ["x", "x"]  # retries=1: two attempts in all
