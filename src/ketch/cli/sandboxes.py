"""`ketch sandbox list | logs | stop`: the sandboxes of an environment (SPEC X1)."""

from __future__ import annotations

from typing import Any

import click

from ketch.cli import cli
from ketch.cli.output import api, clock, print_rows


@cli.group()
def sandbox() -> None:
    """Sandboxes: list them, read their command's output, stop them.

    \b
    Example:
      ketch sandbox list --all
      ketch sandbox logs sb-1a2b3c
      ketch sandbox stop sb-1a2b3c
    """


def _state(row: dict[str, Any]) -> str:
    if row["state"] != "ended":
        return str(row["state"])
    return f"{row['result']} ({row['returncode']})"


@sandbox.command("list")
@click.option("--env", "environment", default="main", show_default=True)
@click.option("--app-id", default=None, help="Only this app's sandboxes.")
@click.option("--tag", "tags", multiple=True, metavar="KEY=VALUE", help="Only with this tag.")
@click.option("--all", "ended", is_flag=True, help="Include sandboxes that have ended.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def list_sandboxes(
    environment: str, app_id: str | None, tags: tuple[str, ...], ended: bool, as_json: bool
) -> None:
    """List running sandboxes (with --all, ended ones too).

    \b
    Example:
      ketch sandbox list --tag team=data --json
    """
    for tag in tags:
        if "=" not in tag:
            raise click.BadParameter(f"{tag!r} is not KEY=VALUE", param_hint="--tag")
    params: list[tuple[str, str]] = [("environment", environment), ("ended", str(ended).lower())]
    params += [("app_id", app_id)] if app_id else []
    params += [("tag", t) for t in tags]
    rows = api("GET", "/v1/sandboxes", params=params)["sandboxes"]
    print_rows(
        rows,
        as_json,
        ("ID", "APP", "NAME", "STATE", "EXECS", "CREATED", "TAGS"),
        lambda r: [
            r["sandbox_id"],
            r["app_name"],
            r["name"] or "-",
            _state(r),
            str(r["execs"]),
            clock(r["created"]),
            ", ".join(f"{k}={v}" for k, v in r["tags"].items()) or "-",
        ],
    )


@sandbox.command()
@click.argument("sandbox_id")
@click.option("--tail", type=int, default=None, help="Only the last N lines.")
def logs(sandbox_id: str, tail: int | None) -> None:
    """Print a sandbox's command's output and its events (started, ended).

    \b
    Example:
      ketch sandbox logs sb-1a2b3c --tail 50
    """
    params = {"tail": tail} if tail is not None else {}
    for entry in api("GET", f"/v1/sandboxes/{sandbox_id}/logs", params=params)["lines"]:
        prefix = "" if entry["stream"] in ("stdout", "stderr") else f"[{entry['stream']}] "
        click.echo(f"{prefix}{entry['line']}", err=entry["stream"] == "stderr")


@sandbox.command()
@click.argument("sandbox_ids", nargs=-1, required=True)
def stop(sandbox_ids: tuple[str, ...]) -> None:
    """Terminate sandboxes (their processes are killed; exit code 137).

    \b
    Example:
      ketch sandbox stop sb-1a2b3c sb-4d5e6f
    """
    for sid in sandbox_ids:
        info = api("POST", f"/v1/sandboxes/{sid}/terminate")
        click.echo(f"{sid}: {_state(info)}")
