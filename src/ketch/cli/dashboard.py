"""`ketch dashboard`: a one-time login link to the server's web dashboard."""

from __future__ import annotations

import click

from ketch.cli import cli
from ketch.cli.output import api, echo_json, json_option


@cli.command()
@click.option(
    "--open", "open_browser", is_flag=True, help="Also open the link in the default web browser."
)
@json_option
def dashboard(open_browser: bool, as_json: bool) -> None:
    """Print a login link to the web dashboard (apps, logs, calls, rollback...).

    The link works once, for two minutes; it becomes a browser session of this server
    only. The dashboard is served by the server itself, under /dashboard on the
    management API's address.

    \b
    Example:
      ketch dashboard --open
    """
    out = api("POST", "/v1/dashboard/login")
    if as_json:
        echo_json(out)
    else:
        minutes = max(int(out["expires_in"]) // 60, 1)
        click.echo(
            f"Open the ketch dashboard (the link works once, within {minutes} "
            f"minute{'s' if minutes != 1 else ''}):"
        )
        click.echo(out["url"])
    if open_browser:
        import webbrowser

        if not webbrowser.open(out["url"]):
            click.echo(
                "No web browser could be started here; open the link above by hand.", err=True
            )
