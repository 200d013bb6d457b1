"""`ketch serve`: run an app ephemerally and redeploy it whenever its source changes."""

from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

import click

from ketch._client.deploy import FORCE_BUILD_VARS
from ketch.cli import cli
from ketch.cli.loader import find_target, import_target, parse_ref
from ketch.cli.output import force_build_option, request_force_build


def _local_files(root: Path) -> set[Path]:
    """Python files under `root` that this process imported: the app and its local imports."""
    out = set()
    for module in list(sys.modules.values()):
        path = getattr(module, "__file__", None)
        if not path:
            continue
        p = Path(path).resolve()
        if p.suffix == ".py" and p.is_relative_to(root) and "site-packages" not in p.parts:
            out.add(p)
    return out


def _forget_modules(files: set[Path]) -> None:
    """Drop the app's own modules so that the next import reads the edited source."""
    for name, module in list(sys.modules.items()):
        path = getattr(module, "__file__", None)
        if path and Path(path).resolve() in files:
            del sys.modules[name]


@cli.command()
@click.argument("ref")
@click.option("-m", "module", is_flag=True, help="REF is a module name, not a file.")
@click.option("--env", "environment", default=None, help="Environment to serve in.")
@click.option("--name", default=None, help="Serve the app under this name.")
@click.option(
    "--timeout",
    type=float,
    default=None,
    help="Stop after this many seconds (default: run until Ctrl-C).",
)
@click.option("--quiet", is_flag=True, help="Do not show container output.")
@force_build_option
def serve(
    ref: str,
    module: bool,
    environment: str | None,
    name: str | None,
    timeout: float | None,
    quiet: bool,
    force_build: bool,
) -> None:
    """Serve an app's web endpoints with `-dev` URLs, reloading on every edit.

    \b
    Example:
      ketch serve examples/web.py
      curl "$URL?x=42"
    """
    from ketch._app_spec import deploy_app
    from ketch._utils.aio import run_sync
    from ketch.app import RunContext, print_log
    from ketch.cli.run import print_functions

    path, member = parse_ref(ref)
    root = Path(path).resolve().parent if not module else Path.cwd().resolve()
    target = find_target(import_target(path, is_module=module), member, need_entry=False)
    hint = target.module.__name__.rpartition(".")[2]
    # Logs are subscribed below, by this command: platform notes are shown even with --quiet.
    ctx = RunContext(target.app, environment, False, name_hint=hint, name=name)
    app_name = ctx._ephemeral_name()
    noted = threading.Event()

    def on_log(entry: dict[str, Any]) -> None:
        if entry.get("stream") == "system":
            click.echo(f"ketch: {entry['line']}", err=True)
            noted.set()  # perhaps a newer `ketch serve` took the app over: checked below
        elif not quiet:
            print_log(entry)

    def show(line: str) -> None:
        if not quiet:
            click.echo(f"  {line}", err=True)

    request_force_build(force_build)
    with ctx:
        if force_build:
            # The first deploy builds again; reloads build only what an edit changed.
            os.environ.pop(FORCE_BUILD_VARS[0], None)
        app_id = target.app.app_id
        assert app_id is not None
        run_sync(_subscribe_logs(app_id, on_log))
        click.echo(f"Serving app {app_name!r} ({app_id}). Edits are picked up live; Ctrl-C stops.")
        print_functions(target.app)
        files = _local_files(root)
        stop = threading.Event()
        deadline = None if timeout is None else time.monotonic() + timeout

        def watch() -> None:
            import watchfiles

            for changes in watchfiles.watch(
                *{f.parent for f in files}, stop_event=stop, debounce=100, step=50, rust_timeout=200
            ):
                changed = {Path(p).resolve() for _, p in changes}
                if changed & files or any(p.suffix == ".py" for p in changed):
                    reload.set()

        reload = threading.Event()
        watcher = threading.Thread(target=watch, name="ketch-serve-watch", daemon=True)
        watcher.start()
        try:
            while True:
                if deadline is not None and time.monotonic() >= deadline:
                    click.echo(f"Stopping after --timeout {timeout:g}s.", err=True)
                    break
                if noted.is_set():
                    noted.clear()
                    if not run_sync(_is_running(app_id)):
                        # A newer `serve` of this app took the URLs over and stopped this
                        # one's app: a reload here could only fail.
                        click.echo(
                            f"Stopped: another `ketch serve` of {app_name!r} took its URLs over."
                        )
                        break
                left = None if deadline is None else max(0.0, deadline - time.monotonic())
                if not reload.wait(timeout=min(left, 0.5) if left is not None else 0.5):
                    continue
                reload.clear()
                try:
                    _forget_modules(files)
                    fresh = find_target(
                        import_target(path, is_module=module), member, need_entry=False
                    )
                    run_sync(
                        deploy_app(
                            fresh.app,
                            name=app_name,
                            environment=environment or ctx_env(),
                            ephemeral=True,
                            log=show,
                            app_id=app_id,
                        )
                    )
                except Exception as exc:  # a broken edit must not end the session
                    click.echo(
                        f"Reload failed, still serving the previous version: {exc}", err=True
                    )
                    continue
                files = _local_files(root)
                click.echo(f"Reloaded {app_name!r} at {time.strftime('%H:%M:%S')}.")
                print_functions(fresh.app)
        except KeyboardInterrupt:
            click.echo("Stopping.", err=True)
        finally:
            stop.set()


async def _subscribe_logs(app_id: str, handler: Any) -> None:
    from ketch._client.client import Client

    (await Client.current()).subscribe_logs(app_id, handler)


async def _is_running(app_id: str) -> bool:
    from ketch._client.deploy import ApiClient

    rows = await ApiClient().call("GET", "/v1/apps")
    return any(r["app_id"] == app_id and r["running"] for r in rows)


def ctx_env() -> str:
    from ketch.config import Config

    return Config.load().environment
