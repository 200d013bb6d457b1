"""The `ketch` command line."""

from __future__ import annotations

import sys
import traceback
from typing import Any

import click

from ketch.exception import Error


class _Group(click.Group):
    """Turns ketch errors into one readable line (the traceback only with --verbose)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException):
            raise
        except KeyboardInterrupt:
            click.echo("Interrupted.", err=True)
            sys.exit(130)
        except Exception as exc:
            verbose = (ctx.obj or {}).get("verbose") or "--verbose" in sys.argv
            if verbose:
                traceback.print_exc()
            msg = str(exc).strip() or type(exc).__name__
            first, _, rest = msg.partition("\n")
            name = type(exc).__name__ if isinstance(exc, Error) else f"{type(exc).__name__}"
            click.echo(f"Error: {name}: {first}", err=True)
            if rest and isinstance(exc, Error):
                click.echo(rest, err=True)
            if not verbose:
                click.echo("(run with --verbose for the traceback)", err=True)
            sys.exit(1)


@click.group(cls=_Group)
@click.option("--verbose", is_flag=True, help="Show tracebacks for errors.")
@click.pass_context
def cli(ctx: click.Context, verbose: bool) -> None:
    """ketch: serverless Python functions and web endpoints on your own machines."""
    ctx.ensure_object(dict)
    ctx.obj["verbose"] = verbose


def main() -> None:
    from ketch.cli import apps, run, secrets, server  # noqa: F401  (registers commands)

    cli(prog_name="ketch")
