"""`ketch server start | stop | status`."""

from __future__ import annotations

import json
import os
import sys
import time

import click

from ketch.cli import cli
from ketch.cli.output import json_option
from ketch.config import Config


@cli.group()
def server() -> None:
    """Manage the ketch server for this state directory (KETCH_HOME).

    \b
    Example:
      ketch server status
    """


@server.command()
@click.option("--daemon", is_flag=True, help="Start in the background and return.")
def start(daemon: bool) -> None:
    """Start the server (in the foreground unless --daemon).

    \b
    Example:
      ketch server start --daemon
    """
    from ketch._client.discovery import ensure_server, read_server

    cfg = Config.load()
    running = read_server(cfg)
    if running is not None:
        click.echo(f"ketch server already running (pid {running.pid}) at {running.api_url}")
        return
    if daemon:
        info = ensure_server(cfg)
        click.echo(f"ketch server started (pid {info.pid}) at {info.api_url}")
        return
    os.environ["KETCH_HOME"] = str(cfg.home)
    os.execv(sys.executable, [sys.executable, "-m", "ketch._server"])


@server.command()
def stop() -> None:
    """Stop the server (its containers stop with it; deployed apps come back on the next
    start).

    \b
    Example:
      ketch server stop
    """
    from ketch._client.discovery import stop_server

    if stop_server(Config.load()):
        click.echo("ketch server stopped")
    else:
        click.echo("no ketch server was running")


@server.command()
@json_option
def status(as_json: bool) -> None:
    """Show whether the server runs, with its addresses and containers.

    \b
    Example:
      ketch server status --json
    """
    from ketch._client.deploy import ApiClient
    from ketch._client.discovery import read_server
    from ketch._utils.aio import run_sync

    cfg = Config.load()
    info = read_server(cfg)
    if info is None:
        if as_json:
            click.echo(json.dumps({"running": False}))
        else:
            click.echo(f"no ketch server is running for {cfg.home}")
        sys.exit(1)
    # Never start a server just to report on it (one that died a moment ago stays dead).
    st = run_sync(ApiClient(cfg, start=False).call("GET", "/v1/status"))
    if as_json:
        click.echo(json.dumps({"running": True, "api": info.api_url, **st}))
        return
    click.echo(f"ketch server pid {info.pid}, up {_uptime(st['uptime'])}")
    click.echo(f"  api:   {info.api_url}")
    click.echo(f"  calls: {info.host}:{info.call_port}")
    click.echo(f"  web gateway: {st.get('gateway')} (host and custom-domain routing)")
    click.echo(f"  home:  {cfg.home}")
    click.echo(f"  apps: {st['apps']}  containers: {len(st['containers'])}  queued: {st['queued']}")


def _uptime(seconds: float) -> str:
    days, rest = divmod(int(seconds), 86400)
    clock = time.strftime("%H:%M:%S", time.gmtime(rest))
    return f"{days}d {clock}" if days else clock
