"""Helpers for the web tests (this is not an app): what the server says about its
containers and endpoints, which container processes run, and polling.

Everything talks to the server of the current KETCH_HOME, on 127.0.0.1 only.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from supports import procs


def api(method: str, path: str) -> Any:
    from ketch._client.deploy import ApiClient
    from ketch._utils.aio import run_sync

    return run_sync(ApiClient().call(method, path))


@contextlib.contextmanager
def app_running(app: Any) -> Iterator[str]:
    """`app.run()` without streaming its logs; yields the running app's id."""
    with app.run(show_logs=False):
        app_id = app.app_id
        assert app_id is not None
        yield app_id


def web_url(function: Any) -> str:
    """A web function's URL (it has one once its app runs)."""
    url = function.get_web_url()
    assert url is not None, f"{function} has no web URL"
    return str(url)


def function_status(app_id: str) -> dict[str, dict[str, Any]]:
    """function tag -> its containers by state, queued and running inputs, and why queued
    inputs wait (the server's `GET /v1/apps/{id}/status`)."""
    functions: dict[str, dict[str, Any]] = api("GET", f"/v1/apps/{app_id}/status")["functions"]
    return functions


def app_log(app_id: str) -> list[dict[str, Any]]:
    """An app's stored log entries (container output and `system` events), oldest first."""
    entries: list[dict[str, Any]] = api("GET", f"/v1/apps/{app_id}/logs")["entries"]
    return entries


def server_status() -> dict[str, Any]:
    status: dict[str, Any] = api("GET", "/v1/status")
    return status


def containers(app_id: str, tag: str | None = None) -> list[dict[str, Any]]:
    """The server's containers of an app (and function), any state."""
    return [
        {"id": cid, **c}
        for cid, c in server_status()["containers"].items()
        if c["app_id"] == app_id and (tag is None or c["function"] == tag)
    ]


def cold_starts() -> int:
    return int(server_status()["counters"].get("cold_starts", 0))


def endpoint(host_label: str) -> dict[str, Any] | None:
    for ep in api("GET", "/v1/endpoints"):
        if ep["host"] == host_label:
            return dict(ep)
    return None


def endpoints_of(app_id: str) -> dict[str, dict[str, Any]]:
    """function tag -> its row in the server's endpoint list."""
    return {ep["function"]: ep for ep in api("GET", "/v1/endpoints") if ep["app_id"] == app_id}


def runtime_pids(app_id: str) -> list[int]:
    """Container processes of an app still alive on this machine, by their environment."""
    needle = f"KETCH_APP_ID={app_id}".encode()
    return [
        pid
        for pid, cmdline, environ in procs.processes()
        if b"ketch._runtime" in cmdline
        and needle in environ.split(b"\0")
        and procs.state(pid) not in ("Z", None)
    ]


def wait_for(
    condition: Callable[[], Any],
    timeout: float = 20.0,
    interval: float = 0.05,
    what: str = "condition",
) -> Any:
    """Poll until `condition()` is truthy; returns its value."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(interval)


@contextlib.contextmanager
def steady_load(url: str) -> Iterator[list[tuple[int, str]]]:
    """GET `url` from a thread about 40 times a second (well under the rate limit) until the
    block ends; yields the list that gets each answer's (status, body) as it comes, or
    (0, the error) for a request that got no answer."""
    import httpx

    seen: list[tuple[int, str]] = []
    stop = threading.Event()

    def load() -> None:
        with httpx.Client(timeout=30) as client:
            while not stop.is_set():
                try:
                    r = client.get(url)
                    seen.append((r.status_code, r.text))
                except httpx.HTTPError as exc:
                    seen.append((0, repr(exc)))
                time.sleep(0.02)

    loader = threading.Thread(target=load, daemon=True)
    loader.start()
    try:
        yield seen
    finally:
        stop.set()
        loader.join(30)


def gateway_port(home: Path) -> int:
    return int(json.loads((home / "server.json").read_text())["gateway_port"])


def server_pid(home: Path) -> int:
    return int(json.loads((home / "server.json").read_text())["pid"])


def memory_kib(pid: int, field: str) -> int:
    """VmRSS, VmHWM, ... of a process, in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def raw_request(port: int, data: bytes, *, timeout: float = 10.0) -> bytes:
    """Send bytes as they are to the gateway and read what comes back until it closes
    (or `timeout` passes)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        chunks = []
        deadline = time.monotonic() + timeout
        with contextlib.suppress(TimeoutError, ConnectionResetError):
            while time.monotonic() < deadline:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                chunks.append(chunk)
        return b"".join(chunks)


def status_line(response: bytes) -> int:
    match = re.match(rb"HTTP/1\.[01] (\d{3}) ", response)
    assert match, f"not an HTTP response: {response[:200]!r}"
    return int(match.group(1))


class Cli:
    """A long-running `ketch` command (serve) whose output is collected line by line."""

    def __init__(self, home: Path, *args: str, cwd: Path | None = None) -> None:
        env = dict(os.environ)
        env["KETCH_HOME"] = str(home)
        env["PYTHONUNBUFFERED"] = "1"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "ketch.cli", *args],
            env=env,
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: list[str] = []
        self._lock = threading.Lock()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._lock:
                self.lines.append(line.rstrip("\n"))

    @property
    def output(self) -> str:
        with self._lock:
            return "\n".join(self.lines)

    def wait_for_line(self, pattern: str, timeout: float = 60.0, start: int = 0) -> re.Match[str]:
        """The first output line (from line `start` on) matching `pattern`."""
        regex = re.compile(pattern)

        def find() -> re.Match[str] | None:
            with self._lock:
                lines = self.lines[start:]
            for line in lines:
                match = regex.search(line)
                if match:
                    return match
            if self.proc.poll() is not None:
                self._reader.join(2)
                raise AssertionError(
                    f"ketch exited ({self.proc.returncode}) before printing "
                    f"{pattern!r}:\n{self.output}"
                )
            return None

        match: re.Match[str] = wait_for(find, timeout, what=f"{pattern!r} in:\n{self.output}")
        return match

    def line_count(self) -> int:
        with self._lock:
            return len(self.lines)

    def signal(self, sig: int = signal.SIGINT) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(sig)

    def wait(self, timeout: float = 30.0) -> int:
        code = self.proc.wait(timeout)
        self._reader.join(5)
        return code

    def close(self) -> None:
        """Stop the command if it still runs (Ctrl-C first, then harder)."""
        if self.proc.poll() is None:
            self.signal(signal.SIGINT)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._reader.join(5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


@contextlib.contextmanager
def cli(home: Path, *args: str, cwd: Path | None = None) -> Iterator[Cli]:
    proc = Cli(home, *args, cwd=cwd)
    try:
        yield proc
    finally:
        proc.close()
