"""Bounded queues (S3, S2, S4) on a server of its own whose max_queue is 3: past the bound a
call fails with ResourceExhaustedError and a web request gets 429, while other functions
go on answering; what was queued runs once the backlog drains."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from ketch.exception import ResourceExhaustedError
from supports import queues
from supports.web_helpers import app_running, function_status, wait_for, web_url

BOUND = 3


@pytest.fixture
def small_queue_server(fresh_server: Any) -> Iterator[Any]:
    yield fresh_server


@pytest.fixture(autouse=True)
def _bound(monkeypatch: pytest.MonkeyPatch) -> None:
    # Read by the server that `fresh_server` starts.
    monkeypatch.setenv("KETCH_MAX_QUEUE", str(BOUND))


def _status(app_id: str, tag: str) -> dict[str, Any]:
    return function_status(app_id)[tag]


@pytest.mark.spec("S3", "S4")
def test_calls_past_the_bound_fail_clearly_and_other_functions_still_answer(
    small_queue_server: Any, tmp_path: Path
) -> None:
    gate = str(tmp_path / "gate")
    with app_running(queues.app) as app_id:
        calls = [queues.held.spawn(gate, 0)]
        assert wait_for(lambda: _status(app_id, "held")["running"] == 1, 60)
        calls += [queues.held.spawn(gate, i) for i in range(1, BOUND + 1)]
        held = _status(app_id, "held")
        assert held["queued"] == BOUND
        assert any("at max_containers (1)" in r for r in held["waiting"]), held
        with pytest.raises(ResourceExhaustedError, match="too many inputs waiting"):
            queues.held.spawn(gate, 99)
        with pytest.raises(ResourceExhaustedError, match="KETCH_MAX_QUEUE"):
            queues.held.remote(gate, 98)
        # Another function is not stuck behind that backlog: it answers while `held`
        # still has every one of its inputs waiting.
        assert queues.quick.remote() == "quick"
        assert _status(app_id, "held")["queued"] == BOUND
        Path(gate).touch()
        assert [c.get(timeout=60) for c in calls] == list(range(BOUND + 1))


@pytest.mark.spec("S3", "S2")
def test_web_requests_past_the_bound_get_429_and_the_queued_ones_succeed(
    small_queue_server: Any, tmp_path: Path
) -> None:
    gate = str(tmp_path / "gate")
    with app_running(queues.app) as app_id:
        url = web_url(queues.held_web)
        answers: dict[int, httpx.Response] = {}

        def get(i: int) -> None:
            answers[i] = httpx.get(url, params={"gate": gate, "i": i}, timeout=120)

        threads = [threading.Thread(target=get, args=(0,))]
        threads[0].start()
        assert wait_for(lambda: _status(app_id, "held_web")["running"] == 1, 60)
        for i in range(1, BOUND + 1):
            threads.append(threading.Thread(target=get, args=(i,)))
            threads[-1].start()
        assert wait_for(lambda: _status(app_id, "held_web")["queued"] == BOUND, 30)
        refused = httpx.get(url, params={"gate": gate, "i": 99}, timeout=30)
        assert refused.status_code == 429
        assert refused.text.startswith("ketch:") and "too many inputs waiting" in refused.text
        Path(gate).touch()
        for t in threads:
            t.join(120)
        assert sorted(answers) == list(range(BOUND + 1))
        assert all(r.status_code == 200 and r.json() == {"i": i} for i, r in answers.items())
