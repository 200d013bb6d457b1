"""Shared fixtures: a real ketch server in a temporary state directory.

`ketch_server` is one server for the whole session (fast); `fresh_server` gives a test its
own state directory and server (for restarts and kill -9). Both stop every process they
started, containers included.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Generator, Iterator
from pathlib import Path

import pytest

from supports import procs

ROOT = Path(__file__).resolve().parent.parent
# Test servers must not compete for the default gateway port (8000) with each other or
# with a server the developer runs.
os.environ.setdefault("KETCH_GATEWAY_PORT", "0")
sys.path.insert(0, str(ROOT / "tests"))  # so `import supports.x` works in tests


class ServerHandle:
    """Helpers around one state directory and its server process."""

    def __init__(self, home: Path) -> None:
        self.home = home

    @property
    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["KETCH_HOME"] = str(self.home)
        env["PYTHONPATH"] = str(ROOT / "tests") + os.pathsep + env.get("PYTHONPATH", "")
        return env

    def info(self) -> dict[str, object]:
        import json

        data: dict[str, object] = json.loads((self.home / "server.json").read_text())
        return data

    def pid(self) -> int | None:
        try:
            return int(self.info()["pid"])  # type: ignore[call-overload]
        except (FileNotFoundError, ValueError, KeyError):
            return None

    def start(self) -> None:
        from ketch._client.discovery import ensure_server
        from ketch.config import Config

        ensure_server(Config.load())

    def kill9(self) -> None:
        """Kill the server the hard way (no cleanup), and wait until it is gone."""
        pid = self.pid()
        assert pid is not None, "no server running"
        os.kill(pid, signal.SIGKILL)
        _wait_gone(pid)

    def stop(self) -> None:
        pid = self.pid()
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
            if not _wait_gone(pid, 15):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        _kill_containers(self.home)

    def ketch(
        self, *args: str, timeout: float = 120, check: bool = False, cwd: Path | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run the real CLI in a subprocess against this server."""
        proc = subprocess.run(
            [sys.executable, "-m", "ketch.cli", *args],
            env=self.env,
            cwd=cwd or ROOT,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"ketch {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
        return proc


def _wait_gone(pid: int, timeout: float = 10) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        time.sleep(0.02)
    return False


def _kill_containers(home: Path) -> None:
    """Containers left behind by a killed server: every process whose environment names
    this state directory's server socket, or that still runs from its image cache; and any
    server process still running for this state directory."""
    marker = str(home)
    own_home = f"KETCH_HOME={home}".encode()
    for pid, cmdline, environ in procs.processes():
        runs = b"ketch._runtime" in cmdline or b"_runtime/agent.py" in cmdline  # sandboxes'
        container = runs and marker.encode() in cmdline + environ
        # A second server for this home (one a reconnecting client started after the test
        # killed the first) is not in server.json's pid when the race goes that way.
        server = b"ketch._server" in cmdline and own_home in environ.split(b"\0")
        if container or server:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def _use_home(home: Path) -> None:
    from ketch._client.client import Client

    os.environ["KETCH_HOME"] = str(home)
    Client.reset()


@pytest.fixture(scope="session", autouse=True)
def _sandbox_share(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Tests hand containers marker files under their tmp_path: the session's temporary
    directory is shared with every sandboxed container (KETCH_SANDBOX_SHARE), as an
    operator shares a data directory. State directories inside it stay hidden."""
    os.environ.setdefault("KETCH_SANDBOX_SHARE", str(tmp_path_factory.getbasetemp()))


@pytest.fixture(scope="session", autouse=True)
def reaper(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Servers run detached from the session; if the session is killed before it can stop
    them, a reaper process kills what it left (tests/supports/reaper.py)."""
    basetemp = str(tmp_path_factory.getbasetemp())
    script = Path(__file__).parent / "supports" / "reaper.py"
    proc = subprocess.Popen(
        [sys.executable, str(script), str(os.getpid()), basetemp],
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    yield
    proc.terminate()  # the session ended itself and stopped its servers
    proc.wait()


@pytest.fixture(scope="session", autouse=True)
def rootfs_cache() -> Path:
    """One root-filesystem cache for every test run on this machine: the Debian base takes
    half a minute to make, and its layers are keyed by content, so it is left for the next
    run. Set before any server starts, so servers use it too."""
    path = Path(
        os.environ.setdefault("KETCH_ROOTFS_CACHE", f"/tmp/ketch-rootfs-cache-{os.getuid()}")
    )
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="session")
def ketch_server(
    tmp_path_factory: pytest.TempPathFactory, rootfs_cache: Path
) -> Iterator[ServerHandle]:
    home = tmp_path_factory.mktemp("ketch-home")
    previous = os.environ.get("KETCH_HOME")
    _use_home(home)
    handle = ServerHandle(home)
    handle.start()
    yield handle
    _close_client()  # first, or its reconnect would start the server again
    handle.stop()
    if previous is None:
        os.environ.pop("KETCH_HOME", None)
    else:
        os.environ["KETCH_HOME"] = previous


@pytest.fixture
def server(ketch_server: ServerHandle) -> Iterator[ServerHandle]:
    """The session server, made current for this test's SDK calls."""
    _use_home(ketch_server.home)
    yield ketch_server


@pytest.fixture
def fresh_server(tmp_path: Path, ketch_server: ServerHandle) -> Iterator[ServerHandle]:
    """A server of this test's own; the session server becomes current again afterwards."""
    home = tmp_path / "home"
    _use_home(home)
    handle = ServerHandle(home)
    handle.start()
    yield handle
    _close_client()
    handle.stop()
    _use_home(ketch_server.home)


def _close_client() -> None:
    from ketch._client.client import Client, _open_clients
    from ketch._utils.aio import run_sync

    # Every open client, not just the current one: an older one still holding an object
    # handle or a lease would reconnect, and reconnecting starts the server again.
    for client in [Client._current, *_open_clients]:
        if client is not None:
            with contextlib.suppress(Exception):
                run_sync(client.close())
    Client.reset()


def _plain_traceback(exc: BaseException) -> str:
    """A failure's traceback without source lines, which never needs a frame's line."""
    lines = []
    tb = exc.__traceback__
    while tb is not None:
        code = tb.tb_frame.f_code
        lines.append(f'  File "{code.co_filename}", line {tb.tb_lineno}, in {code.co_name}')
        tb = tb.tb_next
    return "\n".join(["Traceback (most recent call last):", *lines, f"{type(exc).__name__}: {exc}"])


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    # CPython 3.11 can leave a traceback entry's tb_lineno None (an exception raised from a
    # signal handler, as pytest-timeout's, at some instructions). pytest's formatting then
    # raises, and the whole session ends in INTERNALERROR. Report such a failure plainly.
    try:
        return (yield)
    except Exception as format_error:
        if call.excinfo is None or call.when == "collect":
            raise
        text = _plain_traceback(call.excinfo.value)
        text += f"\n(pytest could not format this failure: {format_error!r})"
        return pytest.TestReport(
            item.nodeid, item.location, {}, "failed", text, call.when, [], call.duration,
            call.start, call.stop,
        )  # fmt: skip
