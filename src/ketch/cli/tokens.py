"""`ketch token create | list | revoke`: proxy-auth tokens for web endpoints."""

from __future__ import annotations

import json
import time

import click

from ketch.cli import cli
from ketch.cli.output import json_option


@cli.group()
def token() -> None:
    """Manage proxy-auth tokens (for endpoints with requires_proxy_auth=True).

    \b
    Example:
      ketch token create --json
    """


@token.command()
@click.option(
    "--modal",
    "for_modal",
    is_flag=True,
    help="A token pair for the official `modal` client (the server's --modal-wire front end).",
)
@json_option
def create(for_modal: bool, as_json: bool) -> None:
    """Create a token; its secret is shown once and stored only as a hash.

    \b
    Example:
      ketch token create
      curl -H "Ketch-Key: wk-..." -H "Ketch-Secret: ws-..." "$URL"
      ketch token create --modal
    """
    from ketch._client.deploy import ApiClient
    from ketch._utils.aio import run_sync

    if for_modal:
        _create_modal_pair(as_json)
        return

    out = run_sync(ApiClient().call("POST", "/v1/tokens"))
    if as_json:
        click.echo(json.dumps(out))
        return
    click.echo(f"Token id:     {out['token_id']}")
    click.echo(f"Token secret: {out['secret']}")
    click.echo(
        "Send them as Ketch-Key / Ketch-Secret headers (or Modal-Key / Modal-Secret, or "
        "Authorization: Bearer <id>.<secret>). The secret is not shown again."
    )


@token.command("list")
@json_option
def list_tokens(as_json: bool) -> None:
    """List token ids (never secrets).

    \b
    Example:
      ketch token list
    """
    from ketch._client.deploy import ApiClient
    from ketch._utils.aio import run_sync

    rows = run_sync(ApiClient().call("GET", "/v1/tokens"))
    if as_json:
        click.echo(json.dumps(rows))
        return
    for r in rows:
        state = "revoked" if r["revoked"] else "live"
        created = time.strftime("%Y-%m-%d %H:%M", time.localtime(r["created"]))
        click.echo(f"{r['token_id']}  {state:8} created {created}")


@token.command()
@click.argument("token_id")
def revoke(token_id: str) -> None:
    """Revoke a token: requests carrying it get 401 from then on.

    \b
    Example:
      ketch token revoke wk-0123456789abcdef
    """
    from ketch._client.deploy import ApiClient
    from ketch._utils.aio import run_sync

    run_sync(ApiClient().call("DELETE", f"/v1/tokens/{token_id}"))
    click.echo(f"Revoked {token_id}.")


def _create_modal_pair(as_json: bool) -> None:
    from ketch._utils.modal_tokens import new_pair
    from ketch.config import Config

    # Derived from the server token (docs/modal-wire.md), so only its holder can make one.
    path = Config.load().home / "token"
    if not path.is_file():
        raise click.ClickException(f"no server token at {path}: start the server first")
    token_id, secret = new_pair(path.read_text().strip())
    if as_json:
        click.echo(json.dumps({"token_id": token_id, "token_secret": secret}))
        return
    click.echo(f"export MODAL_TOKEN_ID={token_id}")
    click.echo(f"export MODAL_TOKEN_SECRET={secret}")
