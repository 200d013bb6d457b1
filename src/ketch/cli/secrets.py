"""`ketch secret create | list | delete`."""

from __future__ import annotations

import json

import click

from ketch.cli import cli


@cli.group()
def secret() -> None:
    """Manage named secrets (stored encrypted by the server)."""


@secret.command()
@click.argument("name")
@click.argument("pairs", nargs=-1)
@click.option("--env", "environment", default="main")
@click.option("--force", is_flag=True, help="Replace an existing secret.")
def create(name: str, pairs: tuple[str, ...], environment: str, force: bool) -> None:
    """Create a secret from KEY=VALUE pairs.

    \b
    Example:
      ketch secret create my-db USER=app PASSWORD=hunter2
    """
    from ketch._client.deploy import ApiClient
    from ketch._utils.aio import run_sync

    values: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{pair!r} is not KEY=VALUE", param_hint="PAIRS")
        values[key] = value
    run_sync(ApiClient().call("POST", "/v1/secrets", json={
        "name": name, "values": values, "environment": environment, "force": force}))
    click.echo(f"Created secret {name!r} with keys: {', '.join(sorted(values))}")


@secret.command("list")
@click.option("--env", "environment", default="main")
@click.option("--json", "as_json", is_flag=True)
def list_secrets(environment: str, as_json: bool) -> None:
    """List secret names (never values)."""
    from ketch._client.deploy import ApiClient
    from ketch._utils.aio import run_sync

    rows = run_sync(ApiClient().call("GET", "/v1/secrets", params={"environment": environment}))
    if as_json:
        click.echo(json.dumps(rows))
    else:
        for r in rows:
            click.echo(r["name"])


@secret.command()
@click.argument("name")
@click.option("--env", "environment", default="main")
def delete(name: str, environment: str) -> None:
    """Delete a secret."""
    from ketch._client.deploy import ApiClient
    from ketch._utils.aio import run_sync

    run_sync(ApiClient().call("DELETE", f"/v1/secrets/{name}",
                              params={"environment": environment}))
    click.echo(f"Deleted secret {name!r}.")
