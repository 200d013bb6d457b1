"""`ketch secret create | list | delete`."""

from __future__ import annotations

import json
from pathlib import Path

import click

from ketch.cli import cli
from ketch.cli.apps import _environment
from ketch.cli.output import echo_json, env_option, json_option


@cli.group()
def secret() -> None:
    """Manage named secrets (stored encrypted by the server; values are never shown).

    \b
    Example:
      ketch secret create my-db --from-dotenv .env
    """


def _from_json(path: str) -> dict[str, str]:
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise click.BadParameter(f"cannot read {path}: {exc}", param_hint="--from-json") from None
    if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
        # The values are not echoed: they are the secret.
        raise click.BadParameter(
            f"{path} must hold one JSON object of strings", param_hint="--from-json"
        )
    return {str(k): v for k, v in data.items()}


def _from_dotenv(path: str) -> dict[str, str]:
    from ketch._utils.env_values import read_dotenv

    try:
        data = read_dotenv(Path(path))
    except OSError as exc:
        raise click.BadParameter(f"cannot read {path}: {exc}", param_hint="--from-dotenv") from None
    return {k: v for k, v in data.items() if v is not None}


@secret.command()
@click.argument("name")
@click.argument("pairs", nargs=-1)
@click.option(
    "--from-dotenv",
    "dotenv",
    type=click.Path(dir_okay=False),
    default=None,
    help="Also take KEY=VALUE lines from this .env file.",
)
@click.option(
    "--from-json",
    "json_file",
    type=click.Path(dir_okay=False),
    default=None,
    help="Also take the keys of this JSON object.",
)
@env_option
@click.option("--force", is_flag=True, help="Replace an existing secret.")
def create(
    name: str,
    pairs: tuple[str, ...],
    dotenv: str | None,
    json_file: str | None,
    environment: str | None,
    force: bool,
) -> None:
    """Create a secret from KEY=VALUE pairs (and/or a .env or JSON file).

    \b
    Example:
      ketch secret create my-db USER=app PASSWORD=hunter2
    """
    from ketch._client.deploy import ApiClient
    from ketch._utils.aio import run_sync

    values: dict[str, str] = {}
    if dotenv:
        values.update(_from_dotenv(dotenv))
    if json_file:
        values.update(_from_json(json_file))
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            # Only the part before '=' is shown: the rest may be a value.
            raise click.BadParameter(f"{key!r} is not KEY=VALUE", param_hint="PAIRS")
        values[key] = value
    if not values:
        raise click.UsageError("give at least one KEY=VALUE (or --from-dotenv/--from-json)")
    run_sync(
        ApiClient().call(
            "POST",
            "/v1/secrets",
            json={
                "name": name,
                "values": values,
                "environment": _environment(environment),
                "force": force,
            },
        )
    )
    click.echo(f"Created secret {name!r} with keys: {', '.join(sorted(values))}")


@secret.command("list")
@env_option
@json_option
def list_secrets(environment: str | None, as_json: bool) -> None:
    """List secret names (never values).

    \b
    Example:
      ketch secret list --json
    """
    from ketch._client.deploy import ApiClient
    from ketch._utils.aio import run_sync

    rows = run_sync(
        ApiClient().call("GET", "/v1/secrets", params={"environment": _environment(environment)})
    )
    if as_json:
        echo_json(rows)
        return
    for r in rows:
        click.echo(r["name"])


@secret.command()
@click.argument("name")
@env_option
def delete(name: str, environment: str | None) -> None:
    """Delete a secret (apps already deployed with it fail to start new containers).

    \b
    Example:
      ketch secret delete my-db
    """
    from ketch._client.deploy import ApiClient
    from ketch._utils.aio import run_sync

    run_sync(
        ApiClient().call(
            "DELETE", f"/v1/secrets/{name}", params={"environment": _environment(environment)}
        )
    )
    click.echo(f"Deleted secret {name!r}.")
