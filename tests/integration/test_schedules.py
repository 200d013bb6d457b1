"""Scheduled functions on a real server (K1-K3): a deployed Period runs as spawned calls,
its next run survives kill -9, redeploy and stop behave, an ephemeral app runs its
schedule while it is open, `ketch app run-now` and `ketch app status`."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import pytest

from ketch._client.deploy import ApiClient
from ketch._utils.aio import run_sync
from supports.scheduled_app import app, ephemeral, minutely, slow

PERIOD = 2.0


def _wait_for(cond: Callable[[], object], timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError("condition not reached in time")


def _runs(name: str, function: str) -> list[dict[str, Any]]:
    """The spawned calls of `function`, oldest first (server times)."""
    out = run_sync(ApiClient().call("GET", f"/v1/apps/{name}/calls", params={"limit": 1000}))
    rows = [r for r in out["calls"] if r["function"] == function and r["kind"] == "spawn"]
    return sorted(rows, key=lambda r: r["created"])


def _schedules(name: str) -> dict[str, dict[str, Any]]:
    out = run_sync(ApiClient().call("GET", f"/v1/apps/{name}/status"))
    return {s["function"]: s for s in out["schedules"]}


@pytest.mark.spec("K1")
def test_a_deployed_period_runs_as_spawned_calls(fresh_server: Any) -> None:
    app.deploy()
    try:
        runs = _wait_for(lambda: len(r := _runs("scheduled", "tick")) >= 4 and r, timeout=60)
        created = [r["created"] for r in runs]
        assert created == sorted(created)
        # Each is a spawned call like any other: it ran, and its result was stored.
        _wait_for(lambda: all(r["status"] == "ok" for r in _runs("scheduled", "tick")[:4]))
        # The class ran its one method on the same schedule.
        _wait_for(lambda: _runs("scheduled", "Refresher"))
        status = fresh_server.ketch("app", "status", "scheduled", check=True).stdout
        assert "Period(seconds=2)" in status and "next run" in status
    finally:
        fresh_server.ketch("app", "stop", "scheduled", "--yes")


@pytest.mark.spec("K1")
@pytest.mark.timeout(150)
def test_a_minutely_cron_runs_once_at_the_minute_boundary(fresh_server: Any) -> None:
    # Waits for the next minute boundary: up to a minute, in the normal suite.
    minutely.deploy()
    try:
        boundary = _schedules("scheduled-cron")["every_minute"]["next_run"]
        assert boundary % 60 == 0, boundary
        assert not _runs("scheduled-cron", "every_minute")  # nothing at the deploy
        runs = _wait_for(lambda: _runs("scheduled-cron", "every_minute"), timeout=90)
        after = _wait_for(
            lambda: (s := _schedules("scheduled-cron")["every_minute"])["last_call"] and s
        )
        assert after["next_run"] == boundary + 60
        assert runs[0]["created"] >= boundary and after["last_call"] == runs[0]["call_id"]
        _wait_for(lambda: _runs("scheduled-cron", "every_minute")[0]["status"] == "ok")
        # Once: the run finished, and no second call came for the same boundary.
        assert len(_runs("scheduled-cron", "every_minute")) == 1
    finally:
        fresh_server.ketch("app", "stop", "scheduled-cron", "--yes")


@pytest.mark.spec("K2")
def test_kill9_resumes_at_the_persisted_time_without_double_runs(fresh_server: Any) -> None:
    app.deploy()
    try:
        _wait_for(lambda: _runs("scheduled", "tick"))
        before = _schedules("scheduled")["tick"]
        n_before = len(_runs("scheduled", "tick"))
        fresh_server.kill9()
        fresh_server.start()
        after = _wait_for(lambda: _schedules("scheduled").get("tick"))
        # The first run after the restart: the one still due, or (if it came already) the
        # one just made. Either way on the persisted phase, not counted from the restart.
        first_due = after["next_run"]
        if after["last_call"] != before["last_call"]:
            first_due -= PERIOD
        slots = (first_due - before["next_run"]) / PERIOD
        assert slots >= 0 and math.isclose(slots, round(slots), abs_tol=1e-6), (before, after)
        runs = _wait_for(lambda: len(r := _runs("scheduled", "tick")) >= n_before + 2 and r)
        later = runs[n_before:]
        # Nothing ran at the restart itself (no catch-up) and no slot ran twice.
        assert all(r["created"] >= first_due for r in later), (first_due, later)
        slots_seen = math.floor((later[-1]["created"] - first_due) / PERIOD) + 1
        assert len(later) <= slots_seen
    finally:
        fresh_server.ketch("app", "stop", "scheduled", "--yes")


@pytest.mark.spec("K2")
def test_redeploy_and_stop(fresh_server: Any) -> None:
    app.deploy()
    _wait_for(lambda: _runs("scheduled", "tick"))
    # A changed schedule (10 minutes) takes over at once, without a run at the deploy.
    slow.deploy()
    changed = _schedules("scheduled")["tick"]
    assert changed["schedule"] == "Period(minutes=10)"
    n = len(_runs("scheduled", "tick"))
    time.sleep(3 * PERIOD)  # the old 2 s schedule would have run here
    assert len(_runs("scheduled", "tick")) == n
    # The same schedule again: no spurious run either; the next stays after the deploy.
    redeployed_at = _schedules("scheduled")["tick"]["next_run"]
    slow.deploy()
    assert _schedules("scheduled")["tick"]["next_run"] >= redeployed_at
    assert len(_runs("scheduled", "tick")) == n
    # Back to 2 s, then stop: runs come, and after the stop they end.
    app.deploy()
    _wait_for(lambda: len(_runs("scheduled", "tick")) > n)
    fresh_server.ketch("app", "stop", "scheduled", "--yes", check=True)
    stopped = len(_runs("scheduled", "tick"))
    time.sleep(3 * PERIOD)
    assert len(_runs("scheduled", "tick")) == stopped


@pytest.mark.spec("K1")
def test_an_ephemeral_app_runs_its_schedule_while_open(server: Any) -> None:
    with ephemeral.run(show_logs=False):
        app_id = ephemeral.app_id
        assert app_id is not None
        _wait_for(lambda: len(_runs(app_id, "beat")) >= 2)
    ended = len(_runs(app_id, "beat"))
    time.sleep(3)  # three periods: an app still scheduled would run again
    assert len(_runs(app_id, "beat")) == ended


@pytest.mark.spec("K3")
def test_run_now(fresh_server: Any) -> None:
    slow.deploy()  # every 10 minutes: no run of its own during the test
    try:
        out = fresh_server.ketch("app", "run-now", "scheduled", "tick", check=True).stdout
        call_id = out.strip().rsplit(" ", 1)[-1]
        runs = _wait_for(lambda: _runs("scheduled", "tick"))
        assert [r["call_id"] for r in runs] == [call_id]
        missing = fresh_server.ketch("app", "run-now", "scheduled", "nope")
        assert missing.returncode != 0 and "not a scheduled function" in missing.stderr
    finally:
        fresh_server.ketch("app", "stop", "scheduled", "--yes")
