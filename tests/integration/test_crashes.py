"""Start-up failures fail waiting inputs at once (R5); crashes after start re-run the input
elsewhere without using retries (R6), up to a crash-loop limit."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from ketch._client.deploy import ApiClient
from ketch._utils.aio import run_sync
from ketch.exception import ExecutionError
from supports import broken_import, crashy


def _cold_starts() -> int:
    return int(run_sync(ApiClient().call("GET", "/v1/status"))["counters"].get("cold_starts", 0))


@pytest.mark.spec("R5")
def test_import_error_fails_the_call_at_once_with_one_container_start(server: object) -> None:
    with broken_import.app.run(show_logs=False):
        before = _cold_starts()
        started = time.monotonic()
        with pytest.raises(ModuleNotFoundError, match="a_module_that_does_not_exist") as info:
            broken_import.f.remote()
        assert time.monotonic() - started < 30
        assert "broken_import.py" in str(getattr(info.value, "__ketch_remote_traceback__", ""))
        time.sleep(1.5)
        assert _cold_starts() - before == 1  # no restart loop
        # The next call tries a fresh container (and fails the same way).
        with pytest.raises(ModuleNotFoundError):
            broken_import.f.remote()
        assert _cold_starts() - before == 2


@pytest.mark.spec("R5")
def test_enter_hook_failure_reaches_the_caller(server: object) -> None:
    with crashy.app.run(show_logs=False), pytest.raises(RuntimeError, match="enter hook exploded"):
        crashy.BadEnter().f.remote()


@pytest.mark.spec("R6")
@pytest.mark.parametrize("how", ["exit", "sigkill"])
def test_input_of_a_dead_container_runs_again(server: object, tmp_path: Path, how: str) -> None:
    marker = tmp_path / "died"
    with crashy.app.run(show_logs=False):
        # No retries are configured: the re-run does not come from a retry budget.
        result = crashy.die_once.remote(str(marker), how)
    assert result.startswith("survived in ")
    assert marker.read_text() != result.removeprefix("survived in ")


@pytest.mark.spec("R6")
def test_crash_loop_ends_with_a_clear_error(server: object) -> None:
    with crashy.app.run(show_logs=False), pytest.raises(ExecutionError, match="crashed"):
        crashy.always_dies.remote()
