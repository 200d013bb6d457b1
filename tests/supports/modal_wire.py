"""The official `modal` client, from PyPI, in a virtual environment of its own per version
(never ketch's .venv, where `import modal` is ketch's shim), and a ketch server with the
Modal front end on, for tests/integration/test_modal_wire.py.

Environments are cached under <repo>/.cache/modal-<version> (KETCH_TEST_CACHE moves it),
made once per machine under a lock, so parallel test runs share them."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from supports import procs

ROOT = Path(__file__).resolve().parents[2]
# The client versions the front end supports and tests (ketch._modal_wire.proto).
VERSIONS = ("1.6.4", "1.5.4")
NEWEST = VERSIONS[0]


def cache_dir() -> Path:
    path = Path(os.environ.get("KETCH_TEST_CACHE") or ROOT / ".cache")
    path.mkdir(parents=True, exist_ok=True)
    return path


def client_venv(version: str) -> Path:
    """A virtual environment with exactly `modal==version` installed from PyPI."""
    venv = cache_dir() / f"modal-{version}"
    stamp = venv / ".ketch-ok"
    if stamp.is_file():
        return venv
    with open(cache_dir() / f"modal-{version}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if stamp.is_file():
            return venv
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
        subprocess.run(
            [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", f"modal=={version}"],
            check=True,
            timeout=600,
        )
        stamp.write_text(version)
    return venv


def site_packages(venv: Path) -> Path:
    return next((venv / "lib").glob("python3*/site-packages"))


def proto_dir(version: str) -> Path:
    """A directory holding only `modal_proto/` of that client (KETCH_MODAL_PROTO), so the
    server imports Modal's protocol code without the `modal` package itself."""
    target = site_packages(client_venv(version)) / "modal_proto"
    path = cache_dir() / f"modal-proto-{version}"
    path.mkdir(exist_ok=True)
    link = path / "modal_proto"
    if not link.is_symlink() or link.resolve() != target.resolve():
        tmp = path / f".link-{os.getpid()}"
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(target)
        tmp.replace(link)
    return path


@dataclass
class WireServer:
    home: Path
    url: str
    token_id: str
    token_secret: str

    def env(self, **extra: str) -> dict[str, str]:
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("MODAL_", "KETCH_", "VIRTUAL_ENV", "PYTHON"))
        }
        env.update(
            MODAL_SERVER_URL=self.url,
            MODAL_TOKEN_ID=self.token_id,
            MODAL_TOKEN_SECRET=self.token_secret,
            # No ~/.modal.toml of the developer's may change what the client does.
            MODAL_CONFIG_PATH=str(self.home / "modal.toml"),
        )
        env.update(extra)
        return env

    def modal(
        self, version: str, *args: str, cwd: Path, timeout: float = 300, **env: str
    ) -> subprocess.CompletedProcess[str]:
        """The real `modal` CLI of that version, against this server."""
        return subprocess.run(
            [str(client_venv(version) / "bin" / "modal"), *args],
            cwd=cwd,
            env=self.env(**env),
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def python(
        self, version: str, script: Path, *args: str, timeout: float = 300, **env: str
    ) -> subprocess.CompletedProcess[str]:
        """A plain Python process of that client's environment, against this server."""
        return subprocess.run(
            [str(client_venv(version) / "bin" / "python"), str(script), *args],
            cwd=script.parent,
            env=self.env(**env),
            capture_output=True,
            text=True,
            timeout=timeout,
        )


def _ketch_env(home: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(KETCH_HOME=str(home), KETCH_MODAL_PROTO=str(proto_dir(NEWEST)))
    env.setdefault("KETCH_GATEWAY_PORT", "0")
    return env


@contextlib.contextmanager
def wire_server(home: Path) -> Iterator[WireServer]:
    """A real ketch server started by `ketch server start --daemon --modal-wire 0`."""
    for version in VERSIONS:
        client_venv(version)
    env = _ketch_env(home)
    ketch = [sys.executable, "-m", "ketch.cli"]
    subprocess.run(
        [*ketch, "server", "start", "--daemon", "--modal-wire", "0"],
        env=env,
        check=True,
        capture_output=True,
        timeout=120,
    )
    try:
        info = json.loads((home / "server.json").read_text())
        made = subprocess.run(
            [*ketch, "token", "create", "--modal", "--json"],
            env=env,
            check=True,
            capture_output=True,
            text=True,
            timeout=60,
        )
        pair = json.loads(made.stdout)
        yield WireServer(home, info["modal_wire_url"], pair["token_id"], pair["token_secret"])
    finally:
        stop(home)


def stop(home: Path) -> None:
    """Stop the server (SIGTERM: it stops its containers), then kill anything of this
    home's still running (a container of a server that could not finish its stop)."""
    with contextlib.suppress(FileNotFoundError, ValueError, KeyError):
        pid = int(json.loads((home / "server.json").read_text())["pid"])
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and _alive(pid):
            time.sleep(0.05)
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)
    marker = str(home).encode()
    for pid, cmdline, environ in procs.processes():
        ours = b"modal._container_entrypoint" in cmdline or b"ketch._server" in cmdline
        if ours and marker in cmdline + environ:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with contextlib.suppress(ChildProcessError):
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False
    return True


def running_containers(home: Path) -> list[int]:
    """Pids of Modal container runtimes this home's server started."""
    marker = str(home).encode()
    return [
        pid
        for pid, cmdline, environ in procs.processes()
        if b"modal._container_entrypoint" in cmdline and marker in environ
    ]
