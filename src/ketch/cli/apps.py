"""`ketch app list | stop | logs`."""

from __future__ import annotations

import json
import time

import click

from ketch.cli import cli


def _environment(given: str | None) -> str:
    """The --env given, else the configured environment (KETCH_ENVIRONMENT, profile)."""
    if given:
        return given
    from ketch.config import Config

    return Config.load().environment


@cli.group()
def app() -> None:
    """Inspect and manage apps."""


@app.command("list")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--env", "environment", default=None, help="Only this environment.")
def list_apps(as_json: bool, environment: str | None) -> None:
    """List apps, running and stopped."""
    from ketch._client.deploy import ApiClient
    from ketch._utils.aio import run_sync

    rows = run_sync(ApiClient().call("GET", "/v1/apps"))
    if environment:
        rows = [r for r in rows if r["environment"] == environment]
    if as_json:
        click.echo(json.dumps(rows))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("app id", "name", "env", "state", "version", "containers", "created")
    for col in table.columns[:2]:
        col.no_wrap = True  # ids and names are copied into other commands: never cut
    for r in rows:
        created = time.strftime("%m-%d %H:%M", time.localtime(r["created"]))
        table.add_row(r["app_id"], r["name"], r["environment"], r["state"], str(r["version"]),
                      str(r["containers"]), created)
    Console().print(table)


@app.command()
@click.argument("name")
@click.option("--env", "environment", default=None,
              help="Environment (default: the configured one, usually main).")
@click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")
def stop(name: str, environment: str | None, yes: bool) -> None:
    """Stop an app (by name or app id): its containers go and its URLs stop answering."""
    from ketch._client.deploy import ApiClient
    from ketch._utils.aio import run_sync

    out = run_sync(ApiClient().call("POST", f"/v1/apps/{name}/stop",
                                    params={"environment": _environment(environment)}))
    click.echo(f"Stopped app {name!r} ({out['stopped']}).")


@app.command()
@click.argument("name")
@click.option("--env", "environment", default=None,
              help="Environment (default: the configured one, usually main).")
@click.option("--tail", type=click.IntRange(min=0), default=None, help="Only the last N lines.")
@click.option("--since", default=None, help="Only lines newer than this (e.g. 10m, 2h, 1d).")
def logs(name: str, environment: str | None, tail: int | None, since: str | None) -> None:
    """Show an app's stored container output (by name, the latest app of that name)."""
    from ketch._client.deploy import ApiClient
    from ketch._utils.aio import run_sync

    params: dict[str, object] = {"environment": _environment(environment)}
    if tail is not None:
        params["tail"] = tail
    if since:
        params["since"] = time.time() - _duration(since)
    out = run_sync(ApiClient().call("GET", f"/v1/apps/{name}/logs", params=params))
    for line in out["lines"]:
        ts, fn, cid, _stream, text = line.split("\t", 4)
        click.echo(f"{time.strftime('%H:%M:%S', time.localtime(float(ts)))} [{fn} {cid}] {text}")


def _duration(text: str) -> float:
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    try:
        return float(text[:-1]) * units[text[-1]] if text[-1] in units else float(text)
    except (ValueError, IndexError):
        raise click.BadParameter(
            f"{text!r} is not a duration like 30s, 10m, 2h or 1d", param_hint="--since"
        ) from None
