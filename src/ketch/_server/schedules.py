"""Scheduled functions (`schedule=Period(...)` / `Cron(...)`): each run a spawned call.

Every scheduled function of a running app (deployed, or ephemeral while it lives) has an
entry with its next run time, kept in the store. One timer on the injected clock fires at
the earliest; the due entries are spawned as `.spawn()` spawns (records, logs, retries and
timeouts as for any spawned call), their next time written before the call is spawned, so
that a server killed in between skips that run rather than doubling it.

When runs happen:
- A run is due at its time whether or not the previous run has finished.
- A run that fell due while the server was down is not caught up: after a restart an entry
  whose time has passed moves on to its next time after now (Modal's behaviour).
- A redeploy keeps a Cron's times; it restarts a Period's count (Modal's behaviour), and
  a changed schedule starts from the deploy. Neither runs the function at the deploy.
- Stopping the app (or the end of an ephemeral app) removes its entries.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
import zoneinfo
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ketch._utils import payload
from ketch._utils.ids import new_id, stable_id
from ketch._utils.protocol.spec import CronSchedule, PeriodSchedule
from ketch.exception import NotFoundError

if TYPE_CHECKING:
    from ketch._server.apps import AppManager
    from ketch._server.clock import Clock, TimerHandle
    from ketch._server.store import Store

log = logging.getLogger("ketch.server.schedules")

Schedule = PeriodSchedule | CronSchedule
Spawn = Callable[[str, str, dict[str, Any]], None]


# -- when: pure functions of a schedule and a time (wall-clock seconds) -----------------
def add_period(period: PeriodSchedule, t: float) -> float:
    """`t` plus one period. Months and years are calendar months and years, in UTC."""
    if not (period.years or period.months):
        return t + period.fixed_seconds
    from dateutil.relativedelta import relativedelta

    start = dt.datetime.fromtimestamp(t, dt.UTC)
    step = relativedelta(years=period.years, months=period.months)
    moved: dt.datetime = start + step
    return moved.timestamp() + period.fixed_seconds


def cron_next(cron: CronSchedule, t: float) -> float:
    """The first time strictly after `t` that `cron` names, read in its time zone.

    A job at a fixed hour runs once on the night clocks go back, though its local time
    comes twice (cron's own rule); a job whose hour field is `*` runs in both hours."""
    from croniter import croniter

    tz = zoneinfo.ZoneInfo(cron.timezone)
    fixed_hour = not cron.cron.split()[1].startswith("*")
    it = croniter(cron.cron, dt.datetime.fromtimestamp(t, tz))
    while True:
        nxt = float(it.get_next(float))
        if not (fixed_hour and dt.datetime.fromtimestamp(nxt, tz).fold == 1):
            return nxt


def first_run(schedule: Schedule, now: float) -> float:
    """The first run of a schedule deployed at `now`."""
    if isinstance(schedule, PeriodSchedule):
        return add_period(schedule, now)
    return cron_next(schedule, now)


def next_after(schedule: Schedule, due: float, now: float) -> float:
    """The run that follows one due at `due`: the first of its times strictly after `now`
    (times passed meanwhile are not caught up). A Period keeps its phase."""
    if isinstance(schedule, CronSchedule):
        return cron_next(schedule, max(due, now))
    if not (schedule.years or schedule.months):
        step = schedule.fixed_seconds
        return due + step * (math.floor((now - due) / step) + 1) if now >= due else due + step
    t = add_period(schedule, due)
    while t <= now:
        t = add_period(schedule, t)
    return t


def describe(schedule: Schedule) -> str:
    """The schedule as a user wrote it, for `ketch app status`."""
    if isinstance(schedule, CronSchedule):
        return f"Cron({schedule.cron!r}, timezone={schedule.timezone!r})"
    units = ("years", "months", "weeks", "days", "hours", "minutes", "seconds")
    given = [f"{u}={getattr(schedule, u):g}" for u in units if getattr(schedule, u)]
    return f"Period({', '.join(given)})"


# -- which: the scheduled functions of the running apps ---------------------------------
@dataclass(frozen=True)
class Scheduled:
    """A scheduled function as it runs now."""

    function_id: str
    app_id: str
    tag: str
    version: int
    schedule: Schedule
    method: str | None  # a class's one @method(); None for a function

    @property
    def key(self) -> str:
        """The schedule, as compared across deploys."""
        return json.dumps(self.schedule.model_dump(mode="json"), sort_keys=True)


def running_schedules(apps: AppManager) -> list[Scheduled]:
    """The scheduled functions of every app that runs (deployed, or ephemeral and open)."""
    out = []
    functions = apps.scheduler.functions
    for app_id, app in apps.apps.items():
        for tag, fid in app["functions"].items():
            fdef = functions.get(fid)
            if fdef is None or fdef.options.schedule is None:
                continue
            spec = fdef.spec
            method = sorted(spec.methods)[0] if spec.kind == "cls" and spec.methods else None
            out.append(Scheduled(fid, app_id, tag, fdef.version, fdef.options.schedule, method))
    return out


@dataclass
class Entry:
    fn: Scheduled
    next_run: float
    last_run: float | None = None
    last_call: str | None = None


class Schedules:
    """The entries of the running scheduled functions, their timer, and their runs."""

    def __init__(
        self,
        store: Store,
        clock: Clock,
        running: Callable[[], Iterable[Scheduled]],
        spawn: Spawn,
        note: Callable[[str, str], None] | None = None,
    ) -> None:
        self.store = store
        self.clock = clock
        self.running = running
        self.spawn = spawn
        self.note = note or (lambda _app_id, _line: None)
        self.entries: dict[str, Entry] = {}
        self._stored: dict[str, dict[str, Any]] | None = None  # read once, at the first pass
        self._timer: TimerHandle | None = None
        self._timer_at: float | None = None

    def reconcile(self) -> None:
        """Bring the entries in line with what runs: add, reset or drop; arm the timer."""
        now = self.clock.time()
        live = {fn.function_id: fn for fn in self.running()}
        if self._stored is None:
            self._stored = self.store.schedule_rows()
            gone = [fid for fid in self._stored if fid not in live]
            self.store.delete_schedules(gone)  # apps stopped, or not back, since they were set
        for fid, fn in live.items():
            entry = self.entries.get(fid)
            if entry is None:
                entry = self._load(fn, self._stored.pop(fid, None), now)
                self.entries[fid] = entry
            elif entry.fn != fn:
                self._redeployed(entry, fn, now)
        gone = [fid for fid in self.entries if fid not in live]
        for fid in gone:
            del self.entries[fid]
        self.store.delete_schedules(gone)
        self._arm()

    def _load(self, fn: Scheduled, row: dict[str, Any] | None, now: float) -> Entry:
        """The entry of a function newly seen: its stored next run if it has one (a server
        restart), moved on past now if that time went by while the server was down."""
        if row is None or row["spec"] != fn.key:
            entry = Entry(fn, first_run(fn.schedule, now))
        else:
            entry = Entry(fn, float(row["next_run"]), row["last_run"], row["last_call"])
            if row["version"] != fn.version and isinstance(fn.schedule, PeriodSchedule):
                entry.next_run = first_run(fn.schedule, now)  # deployed while we were down
            elif entry.next_run <= now:
                missed = entry.next_run
                entry.next_run = next_after(fn.schedule, missed, now)
                self.note(
                    fn.app_id,
                    f"{fn.tag}: the run due at {_when(missed)} was missed "
                    "while the server was down; missed runs are not caught up",
                )
        self._save(entry)
        return entry

    def _redeployed(self, entry: Entry, fn: Scheduled, now: float) -> None:
        changed = entry.fn.key != fn.key
        restarted = isinstance(fn.schedule, PeriodSchedule) and entry.fn.version != fn.version
        if changed or restarted:
            entry.next_run = first_run(fn.schedule, now)
        entry.fn = fn
        self._save(entry)

    def _save(self, entry: Entry) -> None:
        fn = entry.fn
        self.store.put_schedule(
            fn.function_id,
            fn.app_id,
            fn.key,
            fn.version,
            entry.next_run,
            entry.last_run,
            entry.last_call,
        )

    def _arm(self) -> None:
        due = min((e.next_run for e in self.entries.values()), default=None)
        if due == self._timer_at:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self._timer_at = None
        if due is not None:
            self._timer_at = due
            self._timer = self.clock.call_later(max(0.0, due - self.clock.time()), self._fire)

    def _fire(self) -> None:
        self._timer = self._timer_at = None
        self.reconcile()  # a stop or redeploy since the timer was set is seen first
        now = self.clock.time()
        for entry in list(self.entries.values()):
            if entry.next_run <= now:
                self._run(entry, now)
        self._arm()

    def _run(self, entry: Entry, now: float) -> None:
        due = entry.next_run
        fn = entry.fn
        # Named after the function and the time it ran for: a call that somehow ran twice
        # for one time would be stored once.
        call_id = stable_id("fc", fn.function_id, repr(due))
        entry.next_run = next_after(fn.schedule, due, now)
        entry.last_run, entry.last_call = now, call_id
        self._save(entry)  # before the spawn: a crash in between skips, never doubles
        self._spawn(fn, call_id)

    def _spawn(self, fn: Scheduled, call_id: str) -> None:
        try:
            self.spawn(fn.function_id, call_id, _request(fn))
        except Exception as exc:
            # A full queue, say: this run is lost, the next one is still due on time.
            self.note(fn.app_id, f"{fn.tag}: scheduled run not started: {exc}")
            log.warning("scheduled run of %s not started: %s", fn.tag, exc)

    def run_now(self, app_id: str, tag: str) -> str:
        """Start one run now, besides the schedule (whose next time stays as it was)."""
        self.reconcile()
        for entry in self.entries.values():
            if entry.fn.app_id == app_id and entry.fn.tag == tag:
                call_id = new_id("fc")
                self.spawn(entry.fn.function_id, call_id, _request(entry.fn))
                entry.last_run, entry.last_call = self.clock.time(), call_id
                self._save(entry)
                return call_id
        scheduled = sorted(e.fn.tag for e in self.entries.values() if e.fn.app_id == app_id)
        raise NotFoundError(
            f"{tag!r} is not a scheduled function of this app (scheduled: "
            f"{', '.join(scheduled) or 'none'})"
        )

    def status(self, app_id: str) -> list[dict[str, Any]]:
        """Each schedule of an app with its next and last runs, for `ketch app status`."""
        self.reconcile()  # a deploy a moment ago is shown as it now runs
        rows = []
        for entry in sorted(self.entries.values(), key=lambda e: e.fn.tag):
            if entry.fn.app_id == app_id:
                rows.append(
                    {
                        "function": entry.fn.tag,
                        "schedule": describe(entry.fn.schedule),
                        "next_run": entry.next_run,
                        "last_run": entry.last_run,
                        "last_call": entry.last_call,
                    }
                )
        return rows

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self._timer_at = None


def _request(fn: Scheduled) -> dict[str, Any]:
    return {"args": payload.dumps(((), {})), "method": fn.method, "params": None}


def _when(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
