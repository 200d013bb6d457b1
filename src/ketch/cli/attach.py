"""`ketch container exec ID -- CMD` and `ketch shell APP::FUNCTION`: a command in a running
container, or a shell in a sandbox made of a function's image, secrets and volumes.

Both run the command through the sandbox agent and relay this terminal to it: with a
terminal, in raw mode on a pty of the command's own (what it prints comes back as typed);
without one (a pipe), stdin is sent as it comes and closed at its end, and the command's
stdout and stderr come back separately. The exit code is the command's."""

from __future__ import annotations

import os
import sys
import threading
from typing import Any

import click

from ketch.cli import cli
from ketch.cli.containers import container
from ketch.cli.output import api


def _run(sandbox_id: str, argv: list[str]) -> int:
    from ketch._client import volume_api as http
    from ketch._sandbox_io import ContainerProcess
    from ketch._utils.aio import run_sync

    tty = sys.stdin.isatty() and sys.stdout.isatty()
    body: dict[str, Any] = {"args": argv, "pty": tty}
    pid = run_sync(http.call("POST", f"/v1/sandboxes/{sandbox_id}/exec", json=body))["pid"]
    proc: ContainerProcess[bytes] = ContainerProcess(sandbox_id, pid, text=False)

    def pump_input() -> None:
        while True:
            try:
                data = os.read(sys.stdin.fileno(), 65536)
            except OSError:
                data = b""
            try:
                if data:
                    proc.stdin.write(data)
                else:
                    proc.stdin.write_eof()
                proc.stdin.drain()
            except Exception:
                return  # the process has ended
            if not data:
                return

    def pump(stream: Any, fd: int) -> None:
        for line in stream:
            os.write(fd, line)

    restore = _raw_mode() if tty else None
    try:
        threading.Thread(target=pump_input, daemon=True).start()
        err = threading.Thread(target=pump, args=(proc.stderr, sys.stderr.fileno()), daemon=True)
        err.start()
        pump(proc.stdout, sys.stdout.fileno())
        err.join(timeout=5)
        return proc.wait()
    finally:
        if restore is not None:
            restore()


def _raw_mode() -> Any:
    import termios
    import tty

    fd = sys.stdin.fileno()
    saved = termios.tcgetattr(fd)
    tty.setraw(fd)
    return lambda: termios.tcsetattr(fd, termios.TCSADRAIN, saved)


@container.command("exec", context_settings={"ignore_unknown_options": True})
@click.argument("container_id")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
def exec_(container_id: str, command: tuple[str, ...]) -> None:
    """Run a command in a running container (with its image, environment and secrets).

    \b
    Example:
      ketch container exec ta-1a2b3c -- ls /root
      ketch container exec ta-1a2b3c -- bash
    """
    info = api("POST", "/v1/sandboxes/attach", json={"container_id": container_id})
    sys.exit(_run(info["sandbox_id"], list(command)))


@cli.command()
@click.argument("target")
@click.option("--env", "environment", default="main", show_default=True)
@click.option("--cmd", default="/bin/bash", show_default=True, help="What to run in it.")
@click.option("--timeout", type=int, default=3600, show_default=True, help="Seconds it may live.")
def shell(target: str, environment: str, cmd: str, timeout: int) -> None:
    """A shell in a sandbox on a deployed function's image, with its secrets, volumes and
    source (at /root); or, given a container id, in that running container.

    \b
    Example:
      ketch shell my-app::train
      ketch shell my-app::train --cmd "python -i"
      ketch shell ta-1a2b3c
    """
    import shlex

    argv = shlex.split(cmd)
    if target.startswith("ta-"):
        info = api("POST", "/v1/sandboxes/attach", json={"container_id": target})
        sys.exit(_run(info["sandbox_id"], argv))
    app_name, sep, function = target.partition("::")
    if not sep or not app_name or not function:
        raise click.BadParameter("expected APP::FUNCTION or a container id", param_hint="TARGET")
    body = {"app": app_name, "function": function, "environment": environment, "timeout": timeout}
    info = api("POST", "/v1/sandboxes/shell", json=body)
    try:
        code = _run(info["sandbox_id"], argv)
    finally:
        api("POST", f"/v1/sandboxes/{info['sandbox_id']}/terminate")
    sys.exit(code)
