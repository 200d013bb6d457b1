"""`ketch call list | get`: records of spawned calls and web requests."""

from __future__ import annotations

from typing import Any

import click

from ketch.cli import cli
from ketch.cli.output import api, clock, echo_json, env_option, json_option, print_rows, seconds


@cli.group()
def call() -> None:
    """Records of an app's calls: each `.spawn()` and each web request.

    \b
    Example:
      ketch call list my-app --limit 20
    """


@call.command("list")
@click.argument("app_name")
@env_option
@click.option(
    "--limit",
    type=click.IntRange(min=1),
    default=50,
    show_default=True,
    help="At most this many, newest first.",
)
@json_option
def list_calls(app_name: str, environment: str | None, limit: int, as_json: bool) -> None:
    """List an app's recent calls: spawned calls and web requests, newest first.

    \b
    Example:
      ketch call list my-app --json
    """
    from ketch.cli.apps import _environment

    out = api(
        "GET",
        f"/v1/apps/{app_name}/calls",
        params={"environment": _environment(environment), "limit": limit},
    )

    def cells(r: dict[str, Any]) -> list[str]:
        status = r["status"]
        if r.get("http_status"):
            status = f"{status} ({r['http_status']})"
        return [
            r["call_id"],
            r["kind"],
            r["function"],
            status,
            str(r["attempts"]),
            seconds(r["duration"]),
            clock(r["created"]),
        ]

    print_rows(
        out["calls"],
        as_json,
        ("call id", "kind", "function", "status", "attempts", "duration", "created"),
        cells,
    )


@call.command()
@click.argument("call_id")
@json_option
def get(call_id: str, as_json: bool) -> None:
    """Show one call: status, attempts, duration, and its result's size or its error.

    \b
    Example:
      ketch call get fc-0123456789abcdef
    """
    row = api("GET", f"/v1/calls/{call_id}")
    if as_json:
        echo_json(row)
        return
    click.echo(f"call      {row['call_id']} ({row['kind']})")
    click.echo(f"function  {row['function']}")
    status = row["status"]
    if row.get("http_status"):
        status = f"{status} (HTTP {row['http_status']}, {row['outcome']})"
    click.echo(f"status    {status}")
    click.echo(f"attempts  {row['attempts']}")
    click.echo(f"created   {clock(row['created'])}")
    click.echo(f"duration  {seconds(row['duration'])}")
    if row.get("result"):
        click.echo(f"result    {row['result']}")
    if row.get("error"):
        click.echo(f"error     {row['error']}")
