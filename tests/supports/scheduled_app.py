"""Apps with schedules: a Period of 2 s, a class run on a schedule, an ephemeral one, and a
minutely Cron."""

import ketch

app = ketch.App("scheduled")


@app.function(schedule=ketch.Period(seconds=2))
def tick() -> str:
    return "tick"


@app.cls(schedule=ketch.Period(seconds=2))
class Refresher:
    @ketch.method()
    def refresh(self) -> str:
        return "refreshed"


# Redeployed with a changed schedule by the tests.
slow = ketch.App("scheduled")


@slow.function(schedule=ketch.Period(minutes=10), name="tick")
def tick_slowly() -> str:
    return "tick"


# Run with `with ephemeral.run():` only.
ephemeral = ketch.App("scheduled-ephemeral")


@ephemeral.function(schedule=ketch.Period(seconds=1))
def beat() -> str:
    return "beat"


# Defined at import in every container of `app`, whose images have neither croniter nor
# (perhaps) a time-zone database: the module must still import there.
@app.function(schedule=ketch.Cron("0 6 1 1 *", timezone="Europe/Paris"))
def yearly() -> str:
    return "happy new year"


# A cron run every minute, deployed alone by the minute-boundary test.
minutely = ketch.App("scheduled-cron")


@minutely.function(schedule=ketch.Cron("* * * * *"))
def every_minute() -> str:
    return "minute"
