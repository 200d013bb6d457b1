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
@click.option(
    "--modal-wire",
    metavar="PORT|unix:PATH",
    default=None,
    help="Also serve Modal's own protocol there, for the official `modal` client "
    "(setting modal_wire, KETCH_MODAL_WIRE; docs/modal-wire.md).",
)
@click.option(
    "--backend",
    type=click.Choice(["local", "ray"]),
    default=None,
    help="What runs containers (KETCH_BACKEND): local processes, or a Ray cluster.",
)
@click.option(
    "--ray-address",
    default=None,
    help="The Ray cluster with --backend ray (KETCH_RAY_ADDRESS), e.g. 10.0.0.1:6379.",
)
def start(
    daemon: bool, modal_wire: str | None, backend: str | None, ray_address: str | None
) -> None:
    """Start the server (in the foreground unless --daemon).

    \b
    Example:
      ketch server start --daemon
      ketch server start --modal-wire 9090
      ketch server start --backend ray --ray-address 10.0.0.1:6379
    """
    from ketch._client.discovery import ensure_server, read_server

    if modal_wire is not None:
        # Through the environment, so that the server process (and a daemon) sees it.
        os.environ["KETCH_MODAL_WIRE"] = modal_wire
    _backend_settings(backend, ray_address)
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


def _backend_settings(backend: str | None, ray_address: str | None) -> None:
    """--backend and --ray-address, through the environment as --modal-wire goes."""
    if ray_address is not None and (backend or os.environ.get("KETCH_BACKEND")) != "ray":
        raise click.UsageError("--ray-address goes with --backend ray")
    if backend is not None:
        os.environ["KETCH_BACKEND"] = backend
    if ray_address is not None:
        os.environ["KETCH_RAY_ADDRESS"] = ray_address


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
    wire_url = _modal_wire_url(cfg)
    if as_json:
        extra = {"modal_wire": wire_url} if wire_url else {}
        click.echo(json.dumps({"running": True, "api": info.api_url, **st, **extra}))
        return
    click.echo(f"ketch server pid {info.pid}, up {_uptime(st['uptime'])}")
    click.echo(f"  api:   {info.api_url}")
    click.echo(f"  calls: {info.host}:{info.call_port}")
    click.echo(f"  web gateway: {st.get('gateway')} (host and custom-domain routing)")
    if wire_url:
        click.echo(f"  modal wire: {wire_url} (MODAL_SERVER_URL for the official client)")
    click.echo(f"  home:  {cfg.home}")
    click.echo(f"  apps: {st['apps']}  containers: {len(st['containers'])}  queued: {st['queued']}")


def _modal_wire_url(cfg: Config) -> str | None:
    try:
        url = json.loads(cfg.server_file.read_text()).get("modal_wire_url")
    except (OSError, ValueError):
        return None
    return url if isinstance(url, str) else None


def _uptime(seconds: float) -> str:
    days, rest = divmod(int(seconds), 86400)
    clock = time.strftime("%H:%M:%S", time.gmtime(rest))
    return f"{days}d {clock}" if days else clock
