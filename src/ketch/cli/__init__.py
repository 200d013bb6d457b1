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
            verbose = (
                (ctx.obj or {}).get("verbose") or "--verbose" in sys.argv or _verbose_from_config()
            )
            if verbose:
                traceback.print_exc()
            msg = str(exc).strip() or type(exc).__name__
            first, _, rest = msg.partition("\n")
            # A bare ketch Error (or one whose subclass only the server knows) is named once.
            label = "Error" if type(exc) is Error else f"Error: {type(exc).__name__}"
            click.echo(f"{label}: {first}", err=True)
            if rest and isinstance(exc, Error):
                click.echo(rest, err=True)
            hint = _hint(exc)
            if hint:
                click.echo(f"hint: {hint}", err=True)
            if not verbose:
                click.echo("(run with --verbose for the traceback)", err=True)
            sys.exit(1)


def _hint(exc: BaseException) -> str | None:
    """What to do about a failure whose message alone does not say it."""
    from ketch.exception import remote_traceback_of

    if remote_traceback_of(exc) is None:
        return None
    if isinstance(exc, ModuleNotFoundError):
        # Raised in a container: the module exists here but not in the function's image.
        return (
            f"a container could not import {exc.name or 'a module'!r}. The app's own module "
            "(or package) is shipped unless include_source=False; add other local modules "
            "with Image.add_local_python_source(...) and packages with Image.pip_install(...)"
        )
    return "this was raised inside a container; --verbose shows its remote traceback"


def _verbose_from_config() -> bool:
    from ketch.config import Config

    try:
        return Config.load().verbose
    except Error:
        return False  # the bad setting is what is being reported already


@click.group(cls=_Group)
@click.option("--verbose", is_flag=True, help="Show tracebacks for errors.")
@click.pass_context
def cli(ctx: click.Context, verbose: bool) -> None:
    """ketch: serverless Python functions and web endpoints on your own machines.

    \b
    Example:
      ketch run examples/hello.py
      ketch deploy examples/web.py && ketch app list
    """
    ctx.ensure_object(dict)
    ctx.obj["verbose"] = verbose


def register_commands() -> click.Group:
    """The `ketch` group with every command module imported (each registers itself)."""
    from ketch.cli import (  # noqa: F401  (registers)
        apps,
        attach,
        calls,
        compat,
        containers,
        dashboard,
        images,
        nodes,
        objects,
        run,
        sandboxes,
        secrets,
        serve,
        server,
        status,
        tokens,
        volumes,
    )

    return cli


def main() -> None:
    register_commands()(prog_name="ketch")
