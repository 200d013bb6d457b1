"""Finding the server for this process's state directory, and starting one on demand."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from ketch.config import Config
from ketch.exception import ConnectionError as KetchConnectionError


@dataclass(frozen=True)
class ServerInfo:
    host: str
    api_port: int
    call_port: int
    token: str
    pid: int | None = None

    @property
    def call_addr(self) -> str:
        if self.call_port == 0:
            return self.host  # "unix:/path" inside containers
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.call_port}"

    @property
    def api_url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.api_port}"


def from_container_env() -> ServerInfo | None:
    """Inside a container the server's address and a token come in the environment."""
    addr = os.environ.get("KETCH_CALL_ADDR")
    token = os.environ.get("KETCH_TOKEN")
    if not addr or not token:
        return None
    if addr.startswith("unix:"):
        return ServerInfo(host=addr, api_port=0, call_port=0, token=token)
    host, _, port = addr.rpartition(":")
    return ServerInfo(host=host, api_port=0, call_port=int(port), token=token)


def read_server(config: Config) -> ServerInfo | None:
    try:
        data = json.loads(config.server_file.read_text())
        token = (config.home / "token").read_text().strip()
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    info = ServerInfo(data["host"], data["api_port"], data["call_port"], token, data.get("pid"))
    if not _alive(info):
        return None
    return info


def _alive(info: ServerInfo) -> bool:
    if info.pid is not None:
        try:
            os.kill(info.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass
    try:
        with socket.create_connection((info.host, info.call_port), timeout=1.0):
            return True
    except OSError:
        return False


def ensure_server(config: Config, *, start: bool = True, wait: float = 30.0) -> ServerInfo:
    """The running server for `config.home`; starts a detached one if there is none."""
    info = read_server(config)
    if info is not None or not start:
        if info is None:
            raise KetchConnectionError(f"no ketch server is running for {config.home}")
        return info
    config.home.mkdir(parents=True, exist_ok=True)
    # Many processes may race to start it; the lock makes exactly one of them do it.
    with (config.home / "start.lock").open("a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        info = read_server(config)
        if info is None:
            start_server_process(config)
            deadline = time.monotonic() + wait
            while info is None and time.monotonic() < deadline:
                time.sleep(0.05)
                info = read_server(config)
    if info is None:
        log = config.home / "server.log"
        tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
        raise KetchConnectionError(f"the ketch server did not start; its log ends:\n{tail}")
    return info


def start_server_process(config: Config) -> int:
    env = dict(os.environ)
    env["KETCH_HOME"] = str(config.home)
    log = (config.home / "server.log").open("ab")
    with contextlib.closing(log):
        proc = subprocess.Popen(
            [sys.executable, "-m", "ketch._server"],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,
            cwd=str(config.home),
        )
    # Kept so that the server, which outlives most commands, is reaped (not left a
    # zombie) when it exits before a long-lived client does.
    _STARTED.append(proc)
    return proc.pid


_STARTED: list[subprocess.Popen[bytes]] = []


def stop_server(config: Config, timeout: float = 15.0) -> bool:
    """Stop the server of `config.home`; True if one was running."""
    try:
        data = json.loads(config.server_file.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return False
    try:
        pid = int(data["pid"])
    except (KeyError, TypeError, ValueError):
        return False
    if not _is_ketch_server(pid):
        # server.json outlived its server (kill -9, reboot); the pid may now be anyone's.
        return False
    try:
        os.kill(pid, 15)
    except ProcessLookupError:
        return False
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _gone(pid):
            return True
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, 9)
    return True


def _gone(pid: int) -> bool:
    """True once `pid` has exited. A server started by a long-lived process (a notebook,
    a test runner) stays a zombie until that parent reaps it: exited all the same."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    # The state letter follows the command name, which is in parentheses.
    return stat.rpartition(")")[2].split()[:1] == ["Z"]


def _is_ketch_server(pid: int) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:
        # No such process, or no /proc on this system: then trust a live pid.
        if Path("/proc/self").exists():
            return False
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass
        return True
    except OSError:
        return False
    return b"ketch._server" in cmdline
