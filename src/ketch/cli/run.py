"""`ketch run` and `ketch deploy`."""

from __future__ import annotations

import datetime
import inspect
import typing
from typing import Any

import click

from ketch.app import LocalEntrypoint
from ketch.cli import cli
from ketch.cli.loader import find_target, import_target, parse_ref
from ketch.exception import InvalidError
from ketch.functions import Function


def _load(ref: str, module: bool, need_entry: bool) -> Any:
    path, name = parse_ref(ref)
    mod = import_target(path, is_module=module)
    return find_target(mod, name, need_entry=need_entry)


def _entry_command(entry: LocalEntrypoint | Function) -> click.Command:
    """A click command whose options are the entrypoint's parameters."""
    raw = entry.raw_f if isinstance(entry, LocalEntrypoint) else entry.get_raw_f()
    params: list[click.Parameter] = []
    hints = typing.get_type_hints(raw)
    for p in inspect.signature(raw).parameters.values():
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            raise InvalidError(f"{raw.__name__}: *args/**kwargs cannot become CLI options")
        ann = hints.get(p.name, str)
        required = p.default is p.empty
        default = None if required else p.default
        opt = "--" + p.name.replace("_", "-")
        if ann is bool:
            params.append(click.Option([f"{opt}/--no-{p.name.replace('_', '-')}"],
                                       default=bool(default), show_default=True))
            continue
        kind: Any
        if ann is int:
            kind = click.INT
        elif ann is float:
            kind = click.FLOAT
        elif ann is datetime.datetime:
            kind = click.DateTime()
        elif typing.get_origin(ann) is typing.Literal:
            kind = click.Choice([str(a) for a in typing.get_args(ann)])
        else:
            kind = click.STRING
        params.append(click.Option([opt, p.name], type=kind, required=required,
                                   default=default, show_default=not required))
    return click.Command(raw.__name__, params=params, callback=lambda **kw: kw)


@cli.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.argument("ref")
@click.option("-m", "module", is_flag=True, help="REF is a module name, not a file.")
@click.option("--env", "environment", default=None, help="Environment to run in.")
@click.option("--quiet", is_flag=True, help="Do not show container output.")
@click.pass_context
def run(ctx: click.Context, ref: str, module: bool, environment: str | None, quiet: bool) -> None:
    """Run an app's local entrypoint (or one function) with the app running ephemerally.

    \b
    Example:
      ketch run examples/hello.py
      ketch run examples/hello.py::square --x 7
    """
    target = _load(ref, module, need_entry=True)
    entry = target.entry
    if isinstance(entry, Function | LocalEntrypoint):
        cmd = _entry_command(entry)
        kwargs = cmd.main(args=ctx.args, prog_name=f"ketch run {ref}", standalone_mode=False)
    else:
        raise InvalidError("ketch run needs a local entrypoint or a function")
    with target.app.run(environment_name=environment, show_logs=not quiet):
        if isinstance(entry, LocalEntrypoint):
            result = entry.raw_f(**kwargs)
            if inspect.iscoroutine(result):
                import asyncio

                result = asyncio.run(result)
        elif entry.is_generator:
            for item in entry.remote_gen(**kwargs):
                click.echo(item)
        else:
            result = entry.remote(**kwargs)
            if result is not None:
                click.echo(result)


@cli.command()
@click.argument("ref")
@click.option("-m", "module", is_flag=True, help="REF is a module name, not a file.")
@click.option("--name", default=None, help="Deploy under this app name.")
@click.option("--env", "environment", default=None, help="Environment to deploy to.")
def deploy(ref: str, module: bool, name: str | None, environment: str | None) -> None:
    """Deploy an app persistently: it keeps running after this command and server restarts.

    \b
    Example:
      ketch deploy examples/hello.py
    """
    target = _load(ref, module, need_entry=False)
    app = target.app
    from ketch._utils.aio import Aio

    def show(line: str) -> None:
        click.echo(f"  {line}", err=True)

    Aio(app._deploy)(name=name, environment_name=environment, log=show)
    click.echo(f"Deployed app {name or app.name!r} ({app.app_id}).")
    for tag in sorted(app._handles()):
        click.echo(f"  {tag}")
