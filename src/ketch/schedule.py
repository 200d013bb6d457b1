"""Schedules for `@app.function(schedule=...)`: run a function every period or on a cron."""

from __future__ import annotations

import abc
import math
import zoneinfo
from typing import Any

from ketch.exception import InvalidError

__all__ = ["Cron", "Period", "Schedule"]

# A shorter period would have runs pile up faster than the server's timers are precise.
MIN_PERIOD_SECONDS = 1.0


class Schedule(abc.ABC):
    """What `schedule=` takes: a `Period` or a `Cron`."""

    @abc.abstractmethod
    def spec(self) -> dict[str, Any]:
        """The schedule as the function's stored spec carries it."""


class Period(Schedule):
    """Run every given interval, counted from the deploy: `Period(hours=1)`.

    A redeploy starts the count again; a run missed while the server was down is not
    caught up."""

    def __init__(
        self,
        *,
        years: int = 0,
        months: int = 0,
        weeks: int = 0,
        days: int = 0,
        hours: int = 0,
        minutes: int = 0,
        seconds: float = 0,
    ) -> None:
        values = {
            "years": years,
            "months": months,
            "weeks": weeks,
            "days": days,
            "hours": hours,
            "minutes": minutes,
            "seconds": seconds,
        }
        for unit, value in values.items():
            number = isinstance(value, int | float) and not isinstance(value, bool)
            if not number or not math.isfinite(value) or value < 0:
                raise InvalidError(f"Period({unit}=...) must be a number >= 0, got {value!r}")
            if unit != "seconds" and not float(value).is_integer():
                raise InvalidError(f"Period({unit}=...) must be a whole number, got {value!r}")
        self._values: dict[str, float] = {
            u: (float(v) if u == "seconds" else int(v)) for u, v in values.items()
        }
        if years == 0 and months == 0 and self.fixed_seconds() < MIN_PERIOD_SECONDS:
            raise InvalidError(
                f"a Period must be at least {MIN_PERIOD_SECONDS:g} second, got {self!r}; "
                "a function that must run more often can loop inside one call"
            )

    def fixed_seconds(self) -> float:
        """The length of the weeks, days, hours, minutes and seconds parts, in seconds."""
        v = self._values
        return ((v["weeks"] * 7 + v["days"]) * 86400 + v["hours"] * 3600 + v["minutes"] * 60) + v[
            "seconds"
        ]

    def spec(self) -> dict[str, Any]:
        return {"type": "period", **{u: v for u, v in self._values.items() if v}}

    def __repr__(self) -> str:
        given = ", ".join(f"{u}={v:g}" for u, v in self._values.items() if v)
        return f"Period({given})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Period) and other._values == self._values

    def __hash__(self) -> int:
        return hash(tuple(self._values.items()))


class Cron(Schedule):
    """Run on a cron schedule (minute hour day-of-month month day-of-week), in `timezone`:
    `Cron("0 6 * * *", timezone="Europe/Paris")` runs at 6:00 Paris time, summer or winter.

    A run missed while the server was down is not caught up."""

    def __init__(self, cron_string: str, timezone: str = "UTC") -> None:
        check_cron(cron_string, timezone)
        self.cron_string = " ".join(cron_string.split())
        self.timezone = timezone

    def spec(self) -> dict[str, Any]:
        return {"type": "cron", "cron": self.cron_string, "timezone": self.timezone}

    def __repr__(self) -> str:
        return f"Cron({self.cron_string!r}, timezone={self.timezone!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Cron) and other.spec() == self.spec()

    def __hash__(self) -> int:
        return hash((self.cron_string, self.timezone))


def check_cron(cron_string: object, timezone: object) -> None:
    """Refuse a cron string that is not five valid fields, or an unknown time zone.

    Where croniter or a time-zone database is missing (a container's image need have
    neither) only the shape is checked: the string was checked where it was deployed, and
    the server checks it again."""
    if not isinstance(cron_string, str) or len(cron_string.split()) != 5:
        raise InvalidError(
            f"a cron string has five fields (minute hour day-of-month month day-of-week), "
            f"got {cron_string!r}; for example Cron('*/5 * * * *') runs every five minutes"
        )
    try:
        from croniter import croniter
    except ImportError:
        pass
    else:
        if not croniter.is_valid(cron_string):
            raise InvalidError(
                f"invalid cron string {cron_string!r}; see crontab.guru for the syntax"
            )
    if not isinstance(timezone, str) or not timezone:
        raise InvalidError(f"timezone must be an IANA name like 'Europe/Paris', got {timezone!r}")
    try:
        zoneinfo.ZoneInfo(timezone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        if zoneinfo.available_timezones():
            raise InvalidError(
                f"unknown timezone {timezone!r}; use an IANA name such as 'Europe/Paris' or 'UTC'"
            ) from None
