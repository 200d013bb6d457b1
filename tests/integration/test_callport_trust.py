"""The call port's trust boundary (issue 11): nothing from a peer is unpickled, a peer that
has not said hello is held to a small frame, a bounded count and a timeout; authenticated
peers to a message cap; big payloads give their memory back; per-call secrets stay off the
disk; an idle client leaves a stopped server stopped.

These talk to the real server over raw sockets (TCP and the containers' unix socket)."""

from __future__ import annotations

import contextlib
import hashlib
import os
import pickle
import socket
import struct
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import psutil
import pytest
from cli_support import env_for, ok
from cli_support import ketch as ketch_cli

import ketch
from conftest import ServerHandle
from ketch._server.main import sockets_dir
from ketch._utils.wire import decode, encode_frame
from ketch.exception import RequestSizeError
from supports import callport_apps

MiB = 1024 * 1024


# -- raw peers -----------------------------------------------------------------------
def _connect(handle: ServerHandle, where: str = "tcp") -> socket.socket:
    if where == "unix":
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(str(sockets_dir(handle.home) / "call.sock"))
    else:
        info = handle.info()
        sock = socket.create_connection((str(info["host"]), int(info["call_port"])))  # type: ignore[call-overload]
    sock.settimeout(30)
    return sock


def _token(handle: ServerHandle) -> str:
    return (handle.home / "token").read_text().strip()


def _hello(handle: ServerHandle, token: str | None = None) -> bytes:
    return encode_frame(
        [
            {
                "t": "hello",
                "role": "client",
                "client_id": f"cl-{uuid.uuid4().hex}",
                "token": _token(handle) if token is None else token,
            }
        ]
    )


def _read_frame(sock: socket.socket) -> list[dict[str, Any]] | None:
    """The next frame's messages, or None when the server closed the connection."""
    head = _read_exactly(sock, 8)
    if head is None:
        return None
    body = _read_exactly(sock, struct.unpack(">Q", head)[0])
    return None if body is None else decode(body)


def _read_exactly(sock: socket.socket, n: int) -> bytes | None:
    data = b""
    while len(data) < n:
        try:
            piece = sock.recv(n - len(data))
        except ConnectionResetError:
            return None
        if not piece:
            return None
        data += piece
    return data


def _closed_by_server(sock: socket.socket) -> bool:
    """Whether the server closes the connection (reading, and dropping, what it sends)."""
    while True:
        try:
            if not sock.recv(65536):
                return True
        except ConnectionResetError:
            return True
        except TimeoutError:
            return False


def _authenticated(handle: ServerHandle, where: str = "tcp") -> socket.socket:
    sock = _connect(handle, where)
    sock.sendall(_hello(handle))
    welcome = _read_frame(sock)
    assert welcome is not None and welcome[0]["t"] == "welcome", welcome
    return sock


def _server_pid(handle: ServerHandle) -> int:
    pid = handle.pid()
    assert pid is not None
    return pid


def _peak_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


class _Mkdir:
    """A pickle that, once loaded, creates a directory: proof of code run on load."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.mkdir, (str(self.path),))


def _pickle_frame(marker: Path) -> bytes:
    body = pickle.dumps([{"t": "hello", "role": "client", "token": "", "x": _Mkdir(marker)}])
    return struct.pack(">Q", len(body)) + body


# -- before the hello --------------------------------------------------------------------
@pytest.mark.spec("C4")
@pytest.mark.parametrize("where", ["tcp", "unix"])
def test_a_pickle_sent_before_the_hello_runs_nothing(
    server: ServerHandle, tmp_path: Path, where: str
) -> None:
    marker = tmp_path / "ran"
    with _connect(server, where) as sock:
        sock.sendall(_pickle_frame(marker))
        assert _closed_by_server(sock)
    # After a hello, too: frames are never unpickled, whoever sends them.
    with _authenticated(server, where) as sock:
        sock.sendall(_pickle_frame(marker))
        assert _closed_by_server(sock)
    assert not marker.exists()
    with _authenticated(server, where) as sock:  # the port still serves
        sock.sendall(encode_frame([{"t": "ping", "rid": 7}]))
        assert _read_frame(sock) == [{"t": "pong", "rid": 7}]


@pytest.mark.spec("C4")
def test_a_wrong_token_is_denied(server: ServerHandle) -> None:
    with _connect(server, "unix") as sock:
        sock.sendall(_hello(server, token="kt-" + "x" * 43))
        assert _read_frame(sock) == [{"t": "denied", "reason": "bad token"}]
        assert _closed_by_server(sock)
    with _connect(server) as sock:
        sock.sendall(_hello(server, token="ключ"))  # not ASCII: denied, not a crash
        assert _read_frame(sock) == [{"t": "denied", "reason": "bad token"}]


@pytest.mark.spec("C4")
def test_a_big_frame_before_the_hello_is_refused_unread(fresh_server: ServerHandle) -> None:
    pid = _server_pid(fresh_server)
    before = _peak_kib(pid)
    sent = 0
    with _connect(fresh_server) as sock:
        sock.sendall(struct.pack(">Q", 768 * MiB))
        piece = b"\x00" * MiB
        with contextlib.suppress(OSError):  # the server hangs up on us mid-way
            while sent < 256 * MiB:
                sock.sendall(piece)
                sent += len(piece)
        grown_mib = (_peak_kib(pid) - before) / 1024
        assert _closed_by_server(sock)
    assert grown_mib < 8, (
        f"the server's peak memory grew by {grown_mib:.0f} MiB "
        f"({sent // MiB} MiB sent of a 768 MiB frame)"
    )


@pytest.fixture
def few_unauthenticated(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KETCH_MAX_UNAUTHENTICATED", "3")
    monkeypatch.setenv("KETCH_HELLO_TIMEOUT", "2")


@pytest.mark.spec("C4")
def test_connections_waiting_for_their_hello_are_bounded(
    few_unauthenticated: None, fresh_server: ServerHandle
) -> None:
    idle = [_connect(fresh_server) for _ in range(3)]
    try:
        # A fourth is closed as it arrives, hello or not.
        with _connect(fresh_server) as sock:
            sock.sendall(_hello(fresh_server))
            assert _read_frame(sock) is None
        # The containers' socket has a budget of its own: a TCP flood does not keep them out.
        with _connect(fresh_server, "unix") as sock:
            sock.sendall(_hello(fresh_server))
            reply = _read_frame(sock)
            assert reply is not None and reply[0]["t"] == "welcome"
    finally:
        for sock in idle:
            sock.close()
    # Once those are gone, a peer with a hello gets in again.
    for _ in range(100):
        with _connect(fresh_server) as sock:
            sock.sendall(_hello(fresh_server))
            reply = _read_frame(sock)
        if reply is not None:
            break
        time.sleep(0.1)
    assert reply is not None and reply[0]["t"] == "welcome"
    # A peer that never says hello is let go after hello_timeout.
    with _connect(fresh_server) as sock:
        sock.sendall(b"\x00\x00")
        assert _closed_by_server(sock)


# -- after the hello ---------------------------------------------------------------------
@pytest.fixture
def small_messages(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KETCH_MAX_MESSAGE_BYTES", str(2 * MiB))
    monkeypatch.setenv("KETCH_DICT_VALUE_LIMIT", str(MiB))


@pytest.mark.spec("B1")
def test_messages_over_the_cap_are_refused_and_nothing_else_suffers(
    small_messages: None, fresh_server: ServerHandle
) -> None:
    with callport_apps.app.run(show_logs=False):
        assert callport_apps.echo.remote(b"ok") == b"ok"
        with pytest.raises(RequestSizeError, match="KETCH_MAX_MESSAGE_BYTES"):
            callport_apps.echo.remote(b"x" * 3 * MiB)  # refused by the SDK, unsent
        with pytest.raises(RequestSizeError, match="result"):
            callport_apps.zeros.remote(3 * MiB)  # refused by the container
        # A peer that declares more than the cap is cut off without being read.
        with _authenticated(fresh_server) as sock:
            sock.sendall(struct.pack(">Q", 3 * MiB) + b"\x91\x80")
            assert _closed_by_server(sock)
        assert callport_apps.echo.remote(b"y" * MiB) == b"y" * MiB


@pytest.mark.spec("B1")
@pytest.mark.timeout(300)
def test_server_memory_returns_after_a_1_gib_result(server: ServerHandle) -> None:
    process = psutil.Process(_server_pid(server))
    with callport_apps.app.run(show_logs=False):
        assert callport_apps.zeros.remote(10) == bytes(10)
        start = process.memory_info().rss
        out = callport_apps.zeros.remote(1024 * MiB)
        assert len(out) == 1024 * MiB
        del out
        # Nothing more is sent: the memory must come back by itself, not with the next
        # message. (Polled: the server may still be finishing its write.)
        for _ in range(100):
            over = (process.memory_info().rss - start) / MiB
            if over < 50:
                break
            time.sleep(0.1)
        assert over < 50, f"the server holds {over:.0f} MiB more than before the call"


# -- secrets at rest ---------------------------------------------------------------------
def _files_holding(root: Path, needle: bytes) -> list[str]:
    found = []
    for path in root.rglob("*"):
        with contextlib.suppress(OSError):
            if path.is_file() and not path.is_symlink() and needle in path.read_bytes():
                found.append(str(path.relative_to(root)))
    return found


@pytest.mark.spec("C3")
@pytest.mark.timeout(300)
def test_a_per_call_secret_never_reaches_the_disk_in_plain_text(
    fresh_server: ServerHandle, tmp_path: Path
) -> None:
    value = f"per-call-{uuid.uuid4().hex}"
    gate = tmp_path / "gate"
    callport_apps.app.deploy()
    handle = callport_apps.Env.with_options(
        secrets=[ketch.Secret.from_dict({"CALL_SECRET": value})]
    )
    call = handle().digest_when.spawn("CALL_SECRET", str(gate))
    home = fresh_server.home
    assert (home / "ketch.db").exists()
    assert _files_holding(home, value.encode()) == []
    # A call re-run after a crash still has its secret: it was sealed, not dropped.
    fresh_server.kill9()
    fresh_server.start()
    gate.touch()
    digest = ketch.FunctionCall.from_id(call.object_id).get(timeout=120)
    assert digest == hashlib.sha256(value.encode()).hexdigest()
    assert _files_holding(home, value.encode()) == []


# -- reconnecting --------------------------------------------------------------------------
_IDLE_CLIENT = """
import sys
import ketch

d = ketch.Dict.from_name("idle-client", create_if_missing=True)
d["first"] = 1
print("connected", flush=True)
sys.stdin.readline()
d["second"] = 2
print("again", d["second"], flush=True)
"""


def _servers_of(home: Path) -> list[int]:
    own = f"KETCH_HOME={home}".encode()
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            if b"ketch._server" in (proc / "cmdline").read_bytes() and own in (
                proc / "environ"
            ).read_bytes().split(b"\0"):
                stat = (proc / "stat").read_text()
                if stat.rpartition(")")[2].split()[:1] != ["Z"]:
                    pids.append(int(proc.name))
    return pids


@pytest.mark.spec("C5")
def test_an_idle_client_leaves_a_stopped_server_stopped(fresh_server: ServerHandle) -> None:
    home = fresh_server.home
    proc = subprocess.Popen(
        [sys.executable, "-c", _IDLE_CLIENT],
        env=env_for(home),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None and proc.stdin is not None
        assert proc.stdout.readline().strip() == "connected"
        ok(ketch_cli(home, "server", "stop"))
        # The old client reconnected within a second or so, starting a server again.
        time.sleep(3)
        assert not (home / "server.json").exists()
        assert _servers_of(home) == []
        # Its next use connects again, starting a server.
        proc.stdin.write("\n")
        proc.stdin.flush()
        assert proc.stdout.readline().strip() == "again 2"
        assert proc.wait(timeout=60) == 0
        assert (home / "server.json").exists()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
