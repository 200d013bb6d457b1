"""`ketch run` and `ketch deploy`."""

from __future__ import annotations

import contextlib
import datetime
import inspect
import types
import typing
from typing import Any

import click

from ketch.app import LocalEntrypoint
from ketch.cli import cli
from ketch.cli.loader import Target, find_target, import_target, parse_ref
from ketch.cli.output import force_build_option, request_force_build
from ketch.exception import InvalidError
from ketch.functions import Function


def _load(ref: str, module: bool, need_entry: bool) -> Target:
    path, name = parse_ref(ref)
    mod = import_target(path, is_module=module)
    return find_target(mod, name, need_entry=need_entry)


def _unwrap_optional(ann: Any) -> Any:
    """`X | None` and `Optional[X]` become X: leaving the option out means the default."""
    if typing.get_origin(ann) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(ann) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return ann


class _LiteralChoice(click.Choice):  # type: ignore[type-arg]
    """A Literal's values as choices, handed to the function with their own types."""

    def __init__(self, values: tuple[Any, ...]) -> None:
        self.by_text = {str(v): v for v in values}
        super().__init__(list(self.by_text))

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if any(value is v for v in self.by_text.values()):
            return value  # a default, already of the right type
        return self.by_text[str(super().convert(value, param, ctx))]


def _option_type(ann: Any, where: str, name: str) -> Any:
    if ann is int:
        return click.INT
    if ann is float:
        return click.FLOAT
    if ann is datetime.datetime:
        return click.DateTime()
    if typing.get_origin(ann) is typing.Literal:
        return _LiteralChoice(typing.get_args(ann))
    if ann in (str, typing.Any):
        return click.STRING
    raise InvalidError(
        f"{where}: parameter {name!r} is annotated {ann!r}, which the command line cannot "
        "give; use str, int, float, bool, datetime.datetime or a Literal"
    )


def _entry_command(entry: LocalEntrypoint | Function[..., Any], prog: str) -> click.Command:
    """A click command whose options are the entrypoint's parameters (`--kebab-case`)."""
    raw = entry.raw_f if isinstance(entry, LocalEntrypoint) else entry.get_raw_f()
    try:
        hints = typing.get_type_hints(raw)
    except Exception:
        # Annotations that do not resolve here (forward references): read them as strings.
        hints = {}
    params: list[click.Parameter] = []
    for p in inspect.signature(raw).parameters.values():
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            raise InvalidError(f"{raw.__name__}: *args/**kwargs cannot become CLI options")
        ann = _unwrap_optional(hints.get(p.name, str))
        required = p.default is p.empty
        # Click counts an explicit default=None as a default, which would let a required
        # option go missing silently: pass one only when the function has one.
        extra: dict[str, Any] = {} if required else {"default": p.default}
        flag = p.name.replace("_", "-")
        if ann is bool:
            decls = [f"--{flag}/--no-{flag}", p.name]
            params.append(click.Option(decls, required=required, show_default=True, **extra))
            continue
        kind = _option_type(ann, raw.__name__, p.name)
        params.append(
            click.Option(
                [f"--{flag}", p.name],
                type=kind,
                required=required,
                show_default=not required,
                **extra,
            )
        )
    return click.Command(prog, params=params, callback=lambda **kw: kw, help=inspect.getdoc(raw))


# Options after REF belong to the entrypoint (`ketch run --name x app.py --name ada`).
@cli.command(
    context_settings={
        "ignore_unknown_options": True,
        "allow_extra_args": True,
        "allow_interspersed_args": False,
        "help_option_names": [],
    }
)
@click.argument("ref", required=False)
@click.option("-m", "module", is_flag=True, help="REF is a module name, not a file.")
@click.option("--env", "environment", default=None, help="Environment to run in.")
@click.option("--name", default=None, help="Run the app under this name.")
@click.option(
    "--detach",
    is_flag=True,
    help="Keep the app running after the entrypoint returns (stop it with `ketch app stop`).",
)
@click.option("--quiet", is_flag=True, help="Do not show build or container output.")
@force_build_option
@click.option(
    "--help",
    "show_help",
    is_flag=True,
    help="Show this message (after REF: the entrypoint's options) and exit.",
)
@click.pass_context
def run(
    ctx: click.Context,
    ref: str | None,
    module: bool,
    environment: str | None,
    name: str | None,
    detach: bool,
    quiet: bool,
    force_build: bool,
    show_help: bool,
) -> None:
    """Run an app's local entrypoint (or one function) with the app running ephemerally.

    The entrypoint's parameters are options after REF: `def main(n_items: int)` takes
    `--n-items 3`, and a bool `flag` takes `--flag/--no-flag`. Options of `ketch run`
    itself go before REF.

    \b
    Example:
      ketch run examples/hello.py
      ketch run examples/hello.py::square --x 7
      ketch run -m mypackage.app::main --n 3
      ketch run --detach jobs.py   # the app outlives this command
    """
    if ref is None:
        if show_help:
            click.echo(ctx.get_help())
            return
        raise click.UsageError("Missing argument 'REF' (file.py[::name], or -m module[::name])")
    target = _load(ref, module, need_entry=True)
    entry = target.entry
    if not isinstance(entry, Function | LocalEntrypoint):
        raise InvalidError(f"{ref} names a class; ketch run takes a local entrypoint or a function")
    cmd = _entry_command(entry, f"ketch run {ref}")
    if show_help or "--help" in ctx.args:
        with click.Context(cmd, info_name=cmd.name) as sub:
            click.echo(cmd.get_help(sub))
        return
    kwargs = cmd.main(args=ctx.args, prog_name=cmd.name, standalone_mode=False)
    request_force_build(force_build)
    from ketch.app import RunContext
    from ketch.cli.output import DeployProgress

    hint = target.module.__name__.rpartition(".")[2]
    with contextlib.ExitStack() as stack:
        # The build's progress while the app starts, then the app's own output.
        with DeployProgress(f"starting {name or hint}", quiet=quiet) as show:
            running = stack.enter_context(
                RunContext(
                    target.app,
                    environment,
                    not quiet,
                    name_hint=hint,
                    name=name,
                    detach=detach,
                    log=show,
                )
            )
        app_id = running.app_id
        print_web_urls(target.app)
        if isinstance(entry, LocalEntrypoint):
            result = entry.raw_f(**kwargs)
            if inspect.iscoroutine(result):
                import asyncio

                asyncio.run(result)
        elif entry.is_generator:
            for item in entry.remote_gen(**kwargs):
                click.echo(item)
        else:
            value = entry.remote(**kwargs)
            if value is not None:
                click.echo(value)
    if detach:
        click.echo(
            f"Detached: app {app_id} keeps running; stop it with `ketch app stop {app_id}`.",
            err=True,
        )


@cli.command()
@click.argument("ref")
@click.option("-m", "module", is_flag=True, help="REF is a module name, not a file.")
@click.option("--name", default=None, help="Deploy under this app name.")
@click.option("--env", "environment", default=None, help="Environment to deploy to.")
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print the result as JSON (app id, version, functions and URLs).",
)
@force_build_option
def deploy(
    ref: str,
    module: bool,
    name: str | None,
    environment: str | None,
    as_json: bool,
    force_build: bool,
) -> None:
    """Deploy an app persistently: it keeps running after this command and server restarts.

    \b
    Example:
      ketch deploy examples/hello.py
      ketch deploy -m mypackage.app --name my-app
      ketch deploy app.py --json | jq .functions
    """
    target = _load(ref, module, need_entry=False)
    app = target.app
    request_force_build(force_build)
    from ketch._utils.aio import Aio
    from ketch.cli.output import DeployProgress, echo_json

    with DeployProgress(f"deploying {name or app.name}", quiet=as_json) as show:
        Aio(app._deploy)(name=name, environment_name=environment, log=show)
    if as_json:
        echo_json({"app_id": app.app_id, "name": name or app.name, "functions": _urls(app)})
        return
    click.echo(f"Deployed app {name or app.name!r} ({app.app_id}).")
    print_functions(app)


def _urls(app: Any) -> dict[str, str | None]:
    """Each function's web URL (None for plain functions)."""
    out: dict[str, str | None] = {}
    for tag, handle in sorted(app._handles().items()):
        fn: Any = getattr(handle, "_function", handle)
        out[tag] = fn.get_web_url()
    return out


def print_functions(app: Any) -> None:
    """One line per function; web endpoints with their URL (the one to give curl)."""
    for tag, handle in sorted(app._handles().items()):
        fn = getattr(handle, "_function", handle)
        url = fn.get_web_url()
        click.echo(f"  {tag:24} {url}" if url else f"  {tag}")


def print_web_urls(app: Any) -> None:
    """The app's web endpoints and their URLs, if it has any (`ketch run` starts them too)."""
    rows = []
    for tag, handle in sorted(app._handles().items()):
        url = getattr(handle, "_function", handle).get_web_url()
        if url:
            rows.append(f"  {tag:24} {url}")
    if rows:
        click.echo("Web endpoints:")
        click.echo("\n".join(rows))
