"""`ketch container list | logs | stop`."""

from __future__ import annotations

from typing import Any

import click

from ketch.cli import cli
from ketch.cli.output import api, clock, follow, json_option, print_entry, print_rows


@cli.group()
def container() -> None:
    """Inspect and stop running containers.

    \b
    Example:
      ketch container list --app my-app
    """


@container.command("list")
@click.option("--app", "app_name", default=None, help="Only this app's containers.")
@click.option(
    "--env", "environment", default=None, help="Environment of --app (default: the configured one)."
)
@json_option
def list_containers(app_name: str | None, environment: str | None, as_json: bool) -> None:
    """List running containers: id, app, function, state, inputs in flight, start, pid.

    States: starting, idle, busy (inputs in flight), draining (finishing before it stops).

    \b
    Example:
      ketch container list --json
    """
    from ketch.cli.apps import _environment

    params: dict[str, Any] = {}
    if app_name:
        params = {"app": app_name, "environment": _environment(environment)}
    print_rows(
        api("GET", "/v1/containers", params=params),
        as_json,
        ("container id", "app", "function", "state", "inputs", "started", "pid"),
        lambda r: [
            r["container_id"],
            r["app"],
            r["function"],
            r["state"],
            str(r["inflight"]),
            clock(r["started"]),
            str(r["pid"] or "-"),
        ],
    )


@container.command()
@click.argument("container_id")
@click.option(
    "-f",
    "--follow",
    "follow_",
    is_flag=True,
    help="Keep printing new lines as they come, until Ctrl-C.",
)
@click.option("--tail", type=click.IntRange(min=0), default=None, help="Only the last N lines.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
def logs(container_id: str, follow_: bool, tail: int | None, as_json: bool) -> None:
    """Show one container's output and platform events (also after it stopped).

    \b
    Example:
      ketch container logs ta-0123456789abcdef -f
    """
    params: dict[str, Any] = {} if tail is None else {"tail": tail}
    path = f"/v1/containers/{container_id}/logs"
    if follow_:
        follow(path, params, lambda entry: print_entry(entry, as_json))
        return
    for entry in api("GET", path, params=params)["entries"]:
        print_entry(entry, as_json)


@container.command()
@click.argument("container_id")
def stop(container_id: str) -> None:
    """Stop a container now. Function inputs it was running go back to the queue (as after
    a crash, not charged to retries) and a replacement starts if the function needs one;
    web requests in flight on it fail.

    \b
    Example:
      ketch container stop ta-0123456789abcdef
    """
    out = api("POST", f"/v1/containers/{container_id}/stop")
    click.echo(f"Stopped container {out['stopped']} ({out['requeued']} input(s) re-queued).")
