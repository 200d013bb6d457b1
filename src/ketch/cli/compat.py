"""`ketch compat install | uninstall | status`."""

from __future__ import annotations

import click

from ketch.cli import cli
from ketch.cli.output import echo_json, json_option

_TARGET = click.option(
    "--target",
    default=None,
    type=click.Path(file_okay=False),
    help="Site directory to write to (default: this Python's site-packages).",
)
_SCRIPTS = click.option(
    "--scripts-dir",
    default=None,
    type=click.Path(file_okay=False),
    help="Where the `modal` command goes (default: next to this Python; TARGET/bin with --target).",
)


@cli.group()
def compat() -> None:
    """Run scripts written for Modal: `import modal` and a `modal` command, backed by ketch.

    `ketch run | serve | deploy` need none of this; it is for plain `python script.py` and
    `python -m pkg.module` scripts that import modal and call `app.run()`.

    \b
    Example:
      ketch compat install
      python my_modal_script.py
    """


@compat.command()
@_TARGET
@_SCRIPTS
def install(target: str | None, scripts_dir: str | None) -> None:
    """Make `import modal` resolve to ketch in this Python environment (refused where the
    real modal is installed) and add a `modal` command that forwards to `ketch`.

    \b
    Example:
      ketch compat install
      modal run app.py
    """
    from ketch.compat.install import install as do_install
    from ketch.compat.install import places

    written = do_install(places(target, scripts_dir))
    click.echo("Shim on: `import modal` now gives ketch in this environment.")
    for path in written:
        click.echo(f"  wrote {path}")


@compat.command()
@_TARGET
@_SCRIPTS
def uninstall(target: str | None, scripts_dir: str | None) -> None:
    """Remove the shim and the `modal` command (only ketch's own files are touched).

    \b
    Example:
      ketch compat uninstall
    """
    from ketch.compat.install import places
    from ketch.compat.install import uninstall as do_uninstall

    removed = do_uninstall(places(target, scripts_dir))
    if not removed:
        click.echo("The shim was not installed here; nothing to remove.")
    for path in removed:
        click.echo(f"  removed {path}")


@compat.command()
@_TARGET
@_SCRIPTS
@json_option
def status(target: str | None, scripts_dir: str | None, as_json: bool) -> None:
    """Say whether the shim is installed, and whether the real modal is present.

    \b
    Example:
      ketch compat status --json
    """
    from ketch.compat.install import places
    from ketch.compat.install import status as do_status

    st = do_status(places(target, scripts_dir))
    if as_json:
        echo_json(st)
        return
    click.echo(f"shim: {'on' if st['installed'] else 'off'} ({st['shim_file']})")
    click.echo(f"modal command: {st['modal_command'] or 'not installed'}")
    if st["real_modal_installed"]:
        click.echo("the real modal package is installed: the shim stays inactive")
