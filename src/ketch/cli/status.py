"""`ketch app status APP`: per function, its containers by state, queue depth and why
inputs wait."""

from __future__ import annotations

from typing import Any

import click

from ketch.cli.apps import _environment, app
from ketch.cli.output import api, console, echo_json, env_option, json_option


@app.command("status")
@click.argument("name")
@env_option
@json_option
def status(name: str, environment: str | None, as_json: bool) -> None:
    """Show each function of an app: containers (starting, idle, busy, draining), queued
    and running inputs, and why queued inputs wait (no GPU of a type, at max_containers,
    crash-loop backoff, containers starting); and each schedule with its next run.

    \b
    Example:
      ketch app status my-app --json
    """
    out = api("GET", f"/v1/apps/{name}/status", params={"environment": _environment(environment)})
    if as_json:
        echo_json(out)
        return
    from rich.table import Table

    functions: dict[str, dict[str, Any]] = out["functions"]
    state = "running" if out["running"] else "stopped"
    table = Table(
        "function",
        "starting",
        "idle",
        "busy",
        "draining",
        "queued",
        "running",
        "waiting",
        title=f"{name} ({out['app_id']}, {state})",
    )
    table.columns[0].no_wrap = True
    for tag in sorted(functions):
        f = functions[tag]
        c = f["containers"]
        table.add_row(
            tag,
            str(c["starting"]),
            str(c["idle"]),
            str(c["busy"]),
            str(c["draining"]),
            str(f["queued"]),
            str(f["running"]),
            "; ".join(f["waiting"]) or "-",
        )
    console().print(table)
    schedules: list[dict[str, Any]] = out.get("schedules") or []
    if schedules:
        from ketch.cli.apps import schedule_table

        console().print(schedule_table(schedules))
