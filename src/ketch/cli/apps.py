"""`ketch app list | stop | logs | history | rollback | run-now`."""

from __future__ import annotations

import time
from typing import Any

import click

from ketch.cli import cli
from ketch.cli.output import (
    api,
    clock,
    env_option,
    follow,
    json_option,
    parse_duration,
    print_entry,
    print_rows,
    yes_option,
)


def _environment(given: str | None) -> str:
    """The --env given, else the configured environment (KETCH_ENVIRONMENT, profile)."""
    if given:
        return given
    from ketch.config import Config

    return Config.load().environment


@cli.group()
def app() -> None:
    """Inspect and manage apps.

    \b
    Example:
      ketch app list
      ketch app logs my-app -f
    """


@app.command("list")
@json_option
@click.option("--env", "environment", default=None, help="Only this environment.")
def list_apps(as_json: bool, environment: str | None) -> None:
    """List apps, running and stopped (and broken: deployed, but not served since the
    server started, each with its error).

    \b
    Example:
      ketch app list --json
    """
    rows = api("GET", "/v1/apps")
    if environment:
        rows = [r for r in rows if r["environment"] == environment]
    print_rows(
        rows,
        as_json,
        ("app id", "name", "env", "state", "version", "containers", "created"),
        lambda r: [
            r["app_id"],
            r["name"],
            r["environment"],
            r["state"],
            str(r["version"]),
            str(r["containers"]),
            time.strftime("%m-%d %H:%M", time.localtime(r["created"])),
        ],
        no_wrap=2,
    )
    if as_json:
        return
    # In full, under the table: an error does not fit a column.
    for r in rows:
        if r.get("error"):
            click.echo(
                f"{r['name']} ({r['app_id']}) is broken and not served: {r['error']}\n"
                f"  redeploy it to serve it again, or `ketch app stop {r['name']}`."
            )


@app.command()
@click.argument("name")
@env_option
@yes_option
def stop(name: str, environment: str | None, yes: bool) -> None:
    """Stop an app (by name or app id): its containers go and its URLs stop answering.

    \b
    Example:
      ketch app stop my-app -y
    """
    out = api("POST", f"/v1/apps/{name}/stop", params={"environment": _environment(environment)})
    click.echo(f"Stopped app {name!r} ({out['stopped']}).")


@app.command()
@click.argument("name")
@env_option
@click.option(
    "-f",
    "--follow",
    "follow_",
    is_flag=True,
    help="Keep printing new lines as they come, until Ctrl-C.",
)
@click.option("--tail", type=click.IntRange(min=0), default=None, help="Only the last N lines.")
@click.option("--since", default=None, help="Only lines newer than this (e.g. 10m, 2h, 1d).")
@click.option("--function", default=None, help="Only this function's containers.")
@click.option(
    "--source",
    "sources",
    multiple=True,
    type=click.Choice(["stdout", "stderr", "system"]),
    help="Only this stream; `system` is the platform's events. Repeatable.",
)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
def logs(
    name: str,
    environment: str | None,
    follow_: bool,
    tail: int | None,
    since: str | None,
    function: str | None,
    sources: tuple[str, ...],
    as_json: bool,
) -> None:
    """Show an app's stored container output and platform events (a stopped app's too).

    Lines read `time [function container] text`; platform events (containers starting,
    stopping, crashing, deploys, timeouts) are the `system` source, marked `ketch:`.

    \b
    Example:
      ketch app logs my-app --since 2h --tail 100
      ketch app logs my-app -f --function square --source stderr
    """
    params: dict[str, Any] = {"environment": _environment(environment)}
    if tail is not None:
        params["tail"] = tail
    if since:
        params["since"] = time.time() - parse_duration(since)
    if function:
        params["function"] = function
    if sources:
        params["source"] = list(sources)
    path = f"/v1/apps/{name}/logs"
    if follow_:
        follow(path, params, lambda entry: print_entry(entry, as_json))
        return
    out = api("GET", path, params=params)
    for entry in out["entries"]:
        print_entry(entry, as_json)


@app.command()
@click.argument("name")
@env_option
@json_option
def history(name: str, environment: str | None, as_json: bool) -> None:
    """List an app's deployed versions: number, time, source hash, and which one is live.

    \b
    Example:
      ketch app history my-app
    """
    out = api("GET", f"/v1/apps/{name}/history", params={"environment": _environment(environment)})

    def cells(r: dict[str, Any]) -> list[str]:
        note = "live" if r["live"] else ""
        if r["rollback_of"]:
            note = ", ".join(filter(None, [note, f"rollback to v{r['rollback_of']}"]))
        if r.get("error"):
            note = ", ".join(filter(None, [note, "broken in the store"]))
        return [
            f"v{r['version']}",
            clock(r["created"]),
            (r["source"] or "-")[:12],
            r["spec_hash"],
            ", ".join(r["functions"]),
            note,
        ]

    print_rows(
        out["versions"],
        as_json,
        ("version", "deployed", "source", "spec", "functions", "note"),
        cells,
        no_wrap=0,
    )


@app.command()
@click.argument("name")
@click.argument("version", required=False)
@env_option
def rollback(name: str, version: str | None, environment: str | None) -> None:
    """Serve an earlier version of a deployed app again (default: the previous one).

    The old version's spec becomes a new version (as a redeploy would): its containers
    replace the live ones with no request dropped, and the URLs stay the same.

    \b
    Example:
      ketch app rollback my-app
      ketch app rollback my-app v2
    """
    params: dict[str, Any] = {"environment": _environment(environment)}
    if version is not None:
        text = version.lower().removeprefix("v")
        if not text.isdigit():
            raise click.BadParameter(
                f"{version!r} is not a version number like 3 or v3", param_hint="VERSION"
            )
        params["version"] = int(text)
    out = api("POST", f"/v1/apps/{name}/rollback", params=params)
    click.echo(
        f"Rolled {name!r} back to v{out['rollback_of']}: now serving it as v{out['version']}."
    )


@app.command("run-now")
@click.argument("name")
@click.argument("function")
@env_option
def run_now(name: str, function: str, environment: str | None) -> None:
    """Start one run of a scheduled function now, besides its schedule (whose next run
    stays when it was). The run is a spawned call: see it with `ketch call get`.

    \b
    Example:
      ketch app run-now my-app nightly_report
    """
    out = api(
        "POST",
        f"/v1/apps/{name}/schedules/{function}/run",
        params={"environment": _environment(environment)},
    )
    click.echo(f"Started {function} of {name!r}: call {out['call_id']}")


def schedule_table(rows: list[dict[str, Any]]) -> Any:
    """`ketch app status`: each schedule with its next and last runs, in local time."""
    from rich.table import Table

    def at(t: float | None) -> str:
        return "-" if t is None else time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(t))

    table = Table("function", "schedule", "next run", "last run", "last call", title="schedules")
    for r in rows:
        table.add_row(
            r["function"],
            r["schedule"],
            at(r["next_run"]),
            at(r["last_run"]),
            r["last_call"] or "-",
        )
    return table
