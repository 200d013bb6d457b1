"""The schedule runner (K1, K2) on a clock the test moves: runs spawned when due, the next
time persisted across a restart, missed runs not caught up, redeploys and stops."""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import ketch
from ketch._server.schedules import Scheduled, Schedules
from ketch._server.store import Store
from ketch._utils.protocol.spec import CronSchedule, PeriodSchedule
from ketch.exception import NotFoundError, ResourceExhaustedError

START = 1_800_000_000.0  # a wall-clock time, on a whole minute


class Timer:
    def __init__(self, when: float, callback: Callable[[], object]) -> None:
        self.when, self.callback, self.cancelled = when, callback, False

    def cancel(self) -> None:
        self.cancelled = True


class Clock:
    """Wall-clock time that moves when the test says, running timers on the way."""

    def __init__(self) -> None:
        self.now = START
        self._timers: list[tuple[float, int, Timer]] = []
        self._seq = itertools.count()

    def monotonic(self) -> float:
        return self.now

    def time(self) -> float:
        return self.now

    def call_later(self, delay: float, callback: Callable[..., object], *args: Any) -> Timer:
        timer = Timer(self.now + max(0.0, delay), lambda: callback(*args))
        heapq.heappush(self._timers, (timer.when, next(self._seq), timer))
        return timer

    def advance(self, dt: float) -> None:
        target = self.now + dt
        while self._timers and self._timers[0][0] <= target:
            when, _, timer = heapq.heappop(self._timers)
            if not timer.cancelled:
                self.now = max(self.now, when)
                timer.callback()
        self.now = target


class World:
    """The running scheduled functions, as the test deploys and stops them."""

    def __init__(self, tmp_path: Path) -> None:
        self.path = tmp_path / "ketch.db"
        self.store = Store(self.path)
        self.clock = Clock()
        self.fns: dict[str, Scheduled] = {}
        self.spawned: list[tuple[str, str, float]] = []  # (function id, call id, time)
        self.notes: list[str] = []
        self.refuse = False
        self.requests: list[dict[str, Any]] = []
        self.schedules = self._runner()

    def _runner(self) -> Schedules:
        return Schedules(
            self.store,
            self.clock,
            lambda: list(self.fns.values()),
            self._spawn,
            note=lambda _app, line: self.notes.append(line),
        )

    def _spawn(self, fid: str, call_id: str, request: dict[str, Any]) -> None:
        if self.refuse:
            raise ResourceExhaustedError("queue full")
        assert request["params"] is None
        self.spawned.append((fid, call_id, self.clock.now))
        self.requests.append(request)

    def deploy(self, tag: str, schedule: Any, version: int = 1, method: str | None = None) -> None:
        spec = schedule.spec()
        model: PeriodSchedule | CronSchedule = (
            PeriodSchedule.model_validate(spec)
            if spec["type"] == "period"
            else CronSchedule.model_validate(spec)
        )
        fid = f"fu-{tag}"
        self.fns[fid] = Scheduled(fid, "ap-1", tag, version, model, method)
        self.schedules.reconcile()

    def stop(self, tag: str) -> None:
        del self.fns[f"fu-{tag}"]

    def restart(self, down_for: float) -> None:
        """A kill -9: nothing is saved on the way down; a new runner on the same file."""
        self.schedules.close()
        self.store.close()
        self.clock.advance(down_for)
        self.store = Store(self.path)
        self.schedules = self._runner()
        self.schedules.reconcile()

    def runs(self, tag: str = "tick") -> list[float]:
        return [t for fid, _, t in self.spawned if fid == f"fu-{tag}"]


@pytest.fixture
def world(tmp_path: Path) -> World:
    return World(tmp_path)


@pytest.mark.spec("K1")
def test_a_period_runs_on_time_as_spawned_calls(world: World) -> None:
    world.deploy("tick", ketch.Period(seconds=2))
    world.clock.advance(10.5)
    assert world.runs() == [START + 2, START + 4, START + 6, START + 8, START + 10]
    assert len({call for _, call, _ in world.spawned}) == 5
    # Nothing at the deploy itself: the first run is one period after it.
    assert world.runs()[0] > START


@pytest.mark.spec("K2")
def test_runs_overlap_the_previous_one(world: World) -> None:
    # The fake spawn never finishes a call: each run still starts at its time.
    world.deploy("tick", ketch.Period(seconds=1))
    world.clock.advance(3)
    assert world.runs() == [START + 1, START + 2, START + 3]


@pytest.mark.spec("K2")
def test_the_next_run_survives_a_restart_without_a_double_or_skipped_run(world: World) -> None:
    world.deploy("tick", ketch.Period(seconds=10))
    world.clock.advance(10)
    assert world.runs() == [START + 10]
    world.restart(down_for=3)  # back before the next time (START + 20)
    assert world.schedules.status("ap-1")[0]["next_run"] == START + 20
    world.clock.advance(8)
    assert world.runs() == [START + 10, START + 20]  # once, at the persisted time
    assert not world.notes


@pytest.mark.spec("K2")
def test_runs_missed_while_down_are_not_caught_up(world: World) -> None:
    world.deploy("tick", ketch.Period(seconds=10))
    world.clock.advance(10)
    world.restart(down_for=35)  # START+20, +30 and +40 went by while down
    assert world.runs() == [START + 10]
    assert world.schedules.status("ap-1")[0]["next_run"] == START + 50
    world.clock.advance(6)
    assert world.runs() == [START + 10, START + 50]
    assert any("not caught up" in n for n in world.notes)


@pytest.mark.spec("K2")
def test_redeploy_makes_no_spurious_run(world: World) -> None:
    world.deploy("tick", ketch.Period(seconds=10))
    world.deploy("cron", ketch.Cron("* * * * *"))
    world.clock.advance(15)
    assert world.runs() == [START + 10]
    # Same schedules, new version: a Period counts again from the deploy (Modal's rule),
    # a Cron keeps its times; neither runs at the deploy.
    world.deploy("tick", ketch.Period(seconds=10), version=2)
    world.deploy("cron", ketch.Cron("* * * * *"), version=2)
    world.clock.advance(9.9)
    assert world.runs() == [START + 10]
    world.clock.advance(0.2)
    assert world.runs() == [START + 10, START + 25]
    # A changed schedule starts from its deploy too.
    world.deploy("tick", ketch.Period(seconds=30), version=3)
    world.clock.advance(29.8)
    assert world.runs() == [START + 10, START + 25]
    world.clock.advance(0.3)
    assert world.runs()[-1] == pytest.approx(START + 55.1)
    assert world.runs("cron") == []
    world.clock.advance(5)
    assert world.runs("cron") == [START + 60]  # the minute as before the redeploys


@pytest.mark.spec("K2")
def test_stopping_the_app_stops_its_schedule(world: World) -> None:
    world.deploy("tick", ketch.Period(seconds=2))
    world.clock.advance(4)
    world.stop("tick")
    world.clock.advance(10)  # the timer set for START+6 finds the function gone
    assert world.runs() == [START + 2, START + 4]
    assert world.store.schedule_rows() == {}
    assert world.schedules.status("ap-1") == []


@pytest.mark.spec("K3")
def test_run_now_runs_once_and_leaves_the_schedule_alone(world: World) -> None:
    world.deploy("tick", ketch.Period(seconds=10))
    world.clock.advance(3)
    call_id = world.schedules.run_now("ap-1", "tick")
    assert world.spawned == [("fu-tick", call_id, START + 3)]
    assert world.schedules.status("ap-1")[0]["next_run"] == START + 10
    assert world.schedules.status("ap-1")[0]["last_call"] == call_id
    with pytest.raises(NotFoundError, match="not a scheduled function"):
        world.schedules.run_now("ap-1", "other")


@pytest.mark.spec("K1")
def test_a_refused_run_is_noted_and_the_next_one_still_comes(world: World) -> None:
    world.deploy("tick", ketch.Period(seconds=2))
    world.refuse = True
    world.clock.advance(2)
    world.refuse = False
    world.clock.advance(2)
    assert world.runs() == [START + 4]
    assert any("queue full" in n for n in world.notes)


@pytest.mark.spec("K1")
def test_a_scheduled_class_runs_its_method(world: World) -> None:
    world.deploy("Model", ketch.Period(seconds=1), method="refresh")
    world.clock.advance(1)
    assert [r["method"] for r in world.requests] == ["refresh"]
