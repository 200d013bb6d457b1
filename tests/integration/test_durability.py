"""What survives a server restart, including `kill -9` (ARCHITECTURE "State and durability")."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

import ketch
from supports.durable import app, traced


def _lines(path: Path, word: str) -> int:
    if not path.exists():
        return 0
    return sum(1 for line in path.read_text().splitlines() if line.startswith(word))


def _wait_for(cond: object, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():  # type: ignore[operator]
            return
        time.sleep(0.05)
    raise AssertionError("condition not reached in time")


@pytest.mark.spec("C5")
def test_deployed_app_and_finished_result_survive_kill9(fresh_server, tmp_path: Path) -> None:
    app.deploy()
    trace = tmp_path / "trace"
    call = traced.spawn(str(trace), 0.0, 21)
    assert call.get(timeout=60) == 42
    fresh_server.kill9()
    fresh_server.start()
    # The result was persisted before the crash, and the app is served again.
    assert ketch.FunctionCall.from_id(call.object_id).get(timeout=30) == 42
    looked_up = ketch.Function.from_name("durable", "traced")
    assert looked_up.remote(str(trace), 0.0, 5) == 10


@pytest.mark.spec("B3")
def test_unfinished_spawned_call_reruns_after_kill9(fresh_server, tmp_path: Path) -> None:
    app.deploy()
    trace = tmp_path / "trace"
    call = traced.spawn(str(trace), 4.0, 7)
    _wait_for(lambda: _lines(trace, "start") == 1)
    fresh_server.kill9()
    fresh_server.start()
    assert ketch.FunctionCall.from_id(call.object_id).get(timeout=60) == 14
    # The interrupted run did not complete: exactly one run finished.
    time.sleep(0.5)
    assert _lines(trace, "start") == 2
    assert _lines(trace, "end") == 1


@pytest.mark.spec("B1")
def test_remote_in_flight_is_resent_after_kill9(fresh_server, tmp_path: Path) -> None:
    app.deploy()
    trace = tmp_path / "trace"
    fn = ketch.Function.from_name("durable", "traced")
    result: dict[str, object] = {}

    def call() -> None:
        try:
            result["value"] = fn.remote(str(trace), 3.0, 8)
        except BaseException as exc:
            result["error"] = exc

    thread = threading.Thread(target=call)
    thread.start()
    _wait_for(lambda: _lines(trace, "start") == 1)
    fresh_server.kill9()
    # No restart here: the client itself brings the server back and re-sends the call.
    thread.join(timeout=90)
    assert not thread.is_alive()
    assert result.get("value") == 16, result
    time.sleep(0.5)
    assert _lines(trace, "end") == 1
