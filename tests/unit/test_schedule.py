"""Schedules as the SDK takes them (K3) and the next-run computation (K1), with times
given by the test: Period and Cron, with Europe/Paris's daylight-saving changes."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest

import ketch
from ketch._server.schedules import cron_next, describe, first_run, next_after
from ketch._utils.protocol.spec import CronSchedule, OptionsSpec, PeriodSchedule
from ketch.exception import InvalidError

PARIS = ZoneInfo("Europe/Paris")


def _paris(y: int, mo: int, d: int, h: int = 0, mi: int = 0) -> float:
    return dt.datetime(y, mo, d, h, mi, tzinfo=PARIS).timestamp()


def _local(t: float) -> str:
    return dt.datetime.fromtimestamp(t, PARIS).isoformat()


def _cron(expr: str, tz: str = "UTC") -> CronSchedule:
    return CronSchedule.model_validate(ketch.Cron(expr, timezone=tz).spec())


def _period(**kw: float) -> PeriodSchedule:
    return PeriodSchedule.model_validate(ketch.Period(**kw).spec())  # type: ignore[arg-type]


def _runs(expr: str, start: float, n: int) -> list[str]:
    cron, out, t = _cron(expr, "Europe/Paris"), [], start
    for _ in range(n):
        t = cron_next(cron, t)
        out.append(_local(t))
    return out


# -- the SDK types ----------------------------------------------------------------------
@pytest.mark.spec("K3")
def test_a_period_under_one_second_or_bad_values_are_refused() -> None:
    for kw in ({"seconds": 0.5}, {}, {"seconds": 0}, {"minutes": -1}, {"days": 1.5}):
        with pytest.raises(InvalidError, match="Period"):
            ketch.Period(**kw)  # type: ignore[arg-type]
    assert ketch.Period(seconds=1).spec() == {"type": "period", "seconds": 1.0}
    assert ketch.Period(hours=1, minutes=30) == ketch.Period(minutes=30, hours=1)


@pytest.mark.spec("K3")
def test_a_bad_cron_string_or_time_zone_is_refused() -> None:
    for bad in ("", "* * * *", "* * * * * *", "61 * * * *", "* 25 * * *", "every minute"):
        with pytest.raises(InvalidError, match="cron"):
            ketch.Cron(bad)
    with pytest.raises(InvalidError, match="timezone"):
        ketch.Cron("* * * * *", timezone="Mars/Olympus")
    assert ketch.Cron("0  6 * * *", timezone="Europe/Paris").spec() == {
        "type": "cron",
        "cron": "0 6 * * *",
        "timezone": "Europe/Paris",
    }


@pytest.mark.spec("K3")
def test_schedule_errors_come_at_decoration() -> None:
    app = ketch.App("sched-decoration")
    with pytest.raises(InvalidError, match="Period"):

        @app.function(schedule=ketch.Period(seconds=0.2), serialized=True)
        def too_fast() -> None: ...

    with pytest.raises(InvalidError, match="no arguments"):

        @app.function(schedule=ketch.Period(seconds=5), serialized=True)
        def needs_args(x: int) -> None: ...

    with pytest.raises(InvalidError, match="web endpoint"):

        @app.function(schedule=ketch.Period(seconds=5), serialized=True)
        @ketch.fastapi_endpoint()
        def web() -> None: ...

    with pytest.raises(InvalidError, match="one @method"):

        @app.cls(schedule=ketch.Cron("* * * * *"), serialized=True)
        class Two:
            @ketch.method()
            def a(self) -> None: ...

            @ketch.method()
            def b(self) -> None: ...

    @app.function(schedule=ketch.Period(seconds=5), serialized=True)
    def fine(x: int = 1) -> None: ...

    assert fine._options.schedule == ketch.Period(seconds=5)


@pytest.mark.spec("K1")
def test_the_schedule_travels_in_the_stored_spec() -> None:
    opts = OptionsSpec.model_validate({"schedule": ketch.Cron("*/5 * * * *").spec()})
    assert isinstance(opts.schedule, CronSchedule) and opts.schedule.cron == "*/5 * * * *"
    assert OptionsSpec.model_validate({}).schedule is None
    # What the server decodes is checked again: a spec written by hand cannot smuggle in
    # a cron string or a period the SDK would refuse.
    for bad in (
        {"type": "cron", "cron": "61 * * * *"},
        {"type": "cron", "cron": "* * * * *", "timezone": "Nowhere/Land"},
        {"type": "period", "seconds": 0.5},
    ):
        with pytest.raises(ValueError):
            OptionsSpec.model_validate({"schedule": bad})


# -- when runs are due ------------------------------------------------------------------
@pytest.mark.spec("K1")
def test_period_runs_every_interval_and_skips_missed_ones_keeping_its_phase() -> None:
    p = _period(seconds=2)
    assert first_run(p, 100.0) == 102.0
    assert next_after(p, 102.0, 102.0) == 104.0
    # Run late (the timer fired after its time): the next keeps the phase.
    assert next_after(p, 102.0, 103.5) == 104.0
    # Down from 102 to 109.1: 104, 106 and 108 are not caught up.
    assert next_after(p, 102.0, 109.1) == 110.0
    assert describe(p) == "Period(seconds=2)"


@pytest.mark.spec("K1")
def test_period_in_months_counts_calendar_months() -> None:
    p = _period(months=1)
    jan31 = dt.datetime(2026, 1, 31, 12, tzinfo=dt.UTC).timestamp()
    assert first_run(p, jan31) == dt.datetime(2026, 2, 28, 12, tzinfo=dt.UTC).timestamp()


@pytest.mark.spec("K1")
def test_cron_is_strictly_after_and_reads_its_time_zone() -> None:
    every_minute = _cron("* * * * *")
    noon = dt.datetime(2026, 6, 1, 12, 0, tzinfo=dt.UTC).timestamp()
    assert cron_next(every_minute, noon) == noon + 60
    assert cron_next(every_minute, noon + 0.5) == noon + 60
    # 6:00 in Paris is 4:00 UTC in summer.
    six = _cron("0 6 * * *", "Europe/Paris")
    assert cron_next(six, noon) == dt.datetime(2026, 6, 2, 4, tzinfo=dt.UTC).timestamp()
    # After a run at a time, the next is the following time (no repeat of the same one).
    due = cron_next(every_minute, noon)
    assert next_after(every_minute, due, due) == due + 60
    # Missed runs are not caught up: the next after a long gap is after now.
    assert next_after(every_minute, due, due + 600.5) == due + 660


@pytest.mark.spec("K1")
def test_cron_across_spring_forward_in_paris() -> None:
    # 2026-03-29: 02:00 CET becomes 03:00 CEST; 02:30 does not exist that night.
    start = _paris(2026, 3, 28, 12)
    assert _runs("30 2 * * *", start, 3) == [
        "2026-03-29T03:00:00+02:00",  # once, right after the change (cron's rule)
        "2026-03-30T02:30:00+02:00",
        "2026-03-31T02:30:00+02:00",
    ]
    assert _runs("0 6 * * *", start, 2) == [
        "2026-03-29T06:00:00+02:00",
        "2026-03-30T06:00:00+02:00",
    ]
    # An hourly job runs every hour that exists: 01:00, then 03:00.
    assert _runs("0 * * * *", _paris(2026, 3, 29, 0, 30), 3) == [
        "2026-03-29T01:00:00+01:00",
        "2026-03-29T03:00:00+02:00",
        "2026-03-29T04:00:00+02:00",
    ]


@pytest.mark.spec("K1")
def test_cron_across_fall_back_in_paris() -> None:
    # 2026-10-25: 03:00 CEST becomes 02:00 CET; 02:30 comes twice that night.
    start = _paris(2026, 10, 24, 12)
    assert _runs("30 2 * * *", start, 2) == [
        "2026-10-25T02:30:00+02:00",  # the first 02:30 only: a daily job runs once a day
        "2026-10-26T02:30:00+01:00",
    ]
    assert _runs("0 6 * * *", start, 2) == [
        "2026-10-25T06:00:00+01:00",
        "2026-10-26T06:00:00+01:00",
    ]
    # An hourly job runs in both 02:00 hours: they are two real hours.
    assert _runs("0 * * * *", _paris(2026, 10, 25, 1, 30), 3) == [
        "2026-10-25T02:00:00+02:00",
        "2026-10-25T02:00:00+01:00",
        "2026-10-25T03:00:00+01:00",
    ]


@pytest.mark.spec("K1")
def test_a_container_without_croniter_still_imports_a_cron_schedule(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A container's image has only what the user installed: the module defining the
    # schedule must import there (the deploy and the server checked the string).
    monkeypatch.setitem(__import__("sys").modules, "croniter", None)
    monkeypatch.setattr("zoneinfo.available_timezones", lambda: set())
    assert ketch.Cron("0 6 * * *", timezone="Nowhere/Known").cron_string == "0 6 * * *"
    with pytest.raises(InvalidError, match="five fields"):
        ketch.Cron("0 6 * *")
