"""ketch.Sandbox through a real server (SPEC X1-X3): create, the command's output, exec with
output read while the process runs, stdin, exit codes, timeouts, terminate, files, tunnels,
lookups from another process, tags and names, the CLI, isolation, and many at once."""

from __future__ import annotations

import concurrent.futures
import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

import ketch
from ketch.exception import (
    AlreadyExistsError,
    InvalidError,
    NotFoundError,
    SandboxFilesystemDirectoryNotEmptyError,
    SandboxFilesystemNotFoundError,
    SandboxTerminatedError,
    SandboxTimeoutError,
)

pytestmark = [
    pytest.mark.skipif(shutil.which("bwrap") is None, reason="sandboxes need bubblewrap"),
    pytest.mark.skipif(shutil.which("slirp4netns") is None, reason="sandboxes need slirp4netns"),
]

PROBE = Path(__file__).resolve().parents[1] / "supports" / "sandbox_probe.py"
IMAGE = ketch.Image.debian_slim().add_local_file(PROBE, "/opt/probe/probe.py")


@pytest.fixture
def app(server: Any) -> ketch.App:
    return ketch.App.lookup("sandbox-tests", create_if_missing=True)


@pytest.fixture
def sb(app: ketch.App) -> Any:
    box = ketch.Sandbox.create(app=app, image=IMAGE)
    yield box
    box.terminate()


@pytest.mark.spec("X1", "X2")
def test_the_command_output_and_an_exec_read_while_it_runs(app: ketch.App) -> None:
    box = ketch.Sandbox.create("sh", "-c", "echo from-main; echo oops >&2; cat", app=app)
    try:
        assert next(iter(box.stdout)) == "from-main\n"
        # The process waits on its input after its first line: that line was read while it
        # ran, not after it ended.
        proc = box.exec("sh", "-c", "echo first; read x; echo second $x; exit 3")
        lines = iter(proc.stdout)
        assert next(lines) == "first\n"
        assert proc.poll() is None
        proc.stdin.write("ok\n")
        proc.stdin.drain()
        assert next(lines) == "second ok\n"
        assert proc.wait() == 3 and proc.returncode == 3
        assert box.poll() is None
        box.stdin.write(b"bye\n")
        box.stdin.write_eof()
        box.stdin.drain()
        box.wait()
        assert box.returncode == 0
        assert box.stderr.read() == "oops\n"
    finally:
        box.terminate()


@pytest.mark.spec("X2")
def test_stdin_round_trip_bytes_and_exit_codes(sb: Any) -> None:
    proc = sb.exec("cat", text=False)
    payload = os.urandom(300_000)
    proc.stdin.write(payload)
    proc.stdin.write_eof()
    proc.stdin.drain()
    assert proc.stdout.read() == payload
    assert proc.wait() == 0
    assert sb.exec("sh", "-c", "exit 7").wait() == 7
    assert sb.exec("sh", "-c", "kill -9 $$").wait() == 137
    with pytest.raises(ketch.exception.ExecutionError, match="no-such-program"):
        sb.exec("no-such-program")


@pytest.mark.spec("X2")
def test_exec_env_workdir_secrets_and_its_timeout(sb: Any) -> None:
    secret = ketch.Secret.from_dict({"TOKEN_X": "s3cr3t"})
    proc = sb.exec("sh", "-c", "pwd; echo $GREETING $TOKEN_X", workdir="/tmp",
                   env={"GREETING": "hi"}, secrets=[secret])  # fmt: skip
    assert proc.stdout.read() == "/tmp\nhi s3cr3t\n"
    slow = sb.exec("sleep", "60", timeout=1)
    assert slow.wait() == -1


@pytest.mark.spec("X1", "X3")
def test_timeout_terminate_and_idle_timeout_end_it(app: ketch.App) -> None:
    timed = ketch.Sandbox.create("sleep", "60", app=app, timeout=1)
    with pytest.raises(SandboxTimeoutError):
        timed.wait()
    assert timed.returncode == 124
    idle = ketch.Sandbox.create(app=app, idle_timeout=1)
    with pytest.raises(SandboxTimeoutError):
        idle.wait()
    stopped = ketch.Sandbox.create("sleep", "60", app=app)
    assert stopped.poll() is None
    stopped.terminate()
    with pytest.raises(SandboxTerminatedError):
        stopped.wait()
    stopped.wait(raise_on_termination=False)
    assert stopped.returncode == 137
    with pytest.raises(InvalidError, match="has ended"):
        stopped.exec("true")


@pytest.mark.spec("X2")
def test_files_round_trip_ten_mebibytes_and_the_directory_api(sb: Any) -> None:
    data = os.urandom(10 * 1024 * 1024)
    with sb.open("/tmp/big.bin", "wb") as fh:
        fh.write(data)
    with sb.open("/tmp/big.bin", "rb") as fh:
        assert fh.read() == data
    # The process inside sees the same file.
    assert sb.exec("sh", "-c", "wc -c < /tmp/big.bin").stdout.read().strip() == str(len(data))
    sb.mkdir("/tmp/a/b", parents=True)
    with sb.open("/tmp/a/b/note.txt", "w") as fh:
        fh.write("one\n")
    with sb.open("/tmp/a/b/note.txt", "a") as fh:
        fh.write("two\n")
    with sb.open("/tmp/a/b/note.txt") as fh:
        assert fh.readline() == "one\n" and fh.read() == "two\n"
    assert sb.ls("/tmp/a/b") == ["note.txt"]
    with pytest.raises(FileNotFoundError):
        sb.open("/tmp/missing.txt")
    with pytest.raises(FileExistsError):
        sb.open("/tmp/a/b/note.txt", "x")
    fs = sb.filesystem
    with pytest.raises(SandboxFilesystemDirectoryNotEmptyError):
        fs.remove("/tmp/a")
    assert [f.name for f in fs.list_files("/tmp/a")] == ["b"] and fs.stat("/tmp/a/b").is_dir()
    fs.write_text("hello", "/tmp/t.txt")
    assert fs.read_text("/tmp/t.txt") == "hello"
    sb.rm("/tmp/a", recursive=True)
    with pytest.raises(SandboxFilesystemNotFoundError):
        fs.stat("/tmp/a")


@pytest.mark.spec("X2")
def test_a_tunnel_url_answers_from_a_server_in_the_sandbox(app: ketch.App) -> None:
    box = ketch.Sandbox.create(
        "python3", "-m", "http.server", "8000", "--directory", "/opt/probe",
        app=app, image=IMAGE, encrypted_ports=[8000],
    )  # fmt: skip
    try:
        tunnel = box.tunnels()[8000]
        assert tunnel.url.startswith("http://127.0.0.1:")
        body = None
        for _ in range(100):  # until the server in the sandbox listens
            try:
                resp = httpx.get(tunnel.url + "/probe.py", timeout=5)
                body = resp.text
                break
            except httpx.HTTPError:
                time.sleep(0.1)
        assert body is not None and "def main()" in body
    finally:
        box.terminate()


@pytest.mark.spec("X1")
def test_from_id_in_another_process_names_tags_and_list(app: ketch.App, server: Any) -> None:
    name = f"box-{uuid.uuid4().hex[:8]}"
    box = ketch.Sandbox.create(app=app, name=name, tags={"team": "a"})
    try:
        code = (
            "import ketch, sys; sb = ketch.Sandbox.from_id(sys.argv[1]);"
            "print(sb.exec('echo', 'seen from afar').stdout.read(), end='')"
        )
        out = subprocess.run(
            [sys.executable, "-c", code, box.object_id],
            capture_output=True, text=True, timeout=60, env={**os.environ, **server.env},
        )  # fmt: skip
        assert out.stdout == "seen from afar\n", out.stderr
        assert ketch.Sandbox.from_name("sandbox-tests", name).object_id == box.object_id
        with pytest.raises(AlreadyExistsError):
            ketch.Sandbox.create(app=app, name=name)
        assert box.object_id in [s.object_id for s in ketch.Sandbox.list(tags={"team": "a"})]
        box.set_tags({"team": "b"})
        assert box.get_tags() == {"team": "b"}
        assert box.object_id not in [s.object_id for s in ketch.Sandbox.list(tags={"team": "a"})]
        assert box.object_id in [s.object_id for s in ketch.Sandbox.list(app_id=app.app_id)]
    finally:
        box.terminate()
    with pytest.raises(NotFoundError):
        ketch.Sandbox.from_name("sandbox-tests", name)
    with pytest.raises(NotFoundError):
        ketch.Sandbox.from_id("sb-doesnotexist")


@pytest.mark.spec("X1")
def test_the_cli_lists_shows_logs_and_stops(app: ketch.App, server: Any) -> None:
    box = ketch.Sandbox.create("sh", "-c", "echo logged-line; sleep 60", app=app)
    env = {**os.environ, **server.env}

    def ketch_cli(*args: str) -> str:
        done = subprocess.run([sys.executable, "-m", "ketch.cli", *args], capture_output=True,
                              text=True, timeout=60, env=env)  # fmt: skip
        assert done.returncode == 0, done.stderr
        return done.stdout

    assert next(iter(box.stdout)) == "logged-line\n"
    rows = json.loads(ketch_cli("sandbox", "list", "--json"))
    assert box.object_id in [r["sandbox_id"] for r in rows]
    assert "logged-line" in ketch_cli("sandbox", "logs", box.object_id)
    assert "terminated" in ketch_cli("sandbox", "stop", box.object_id)
    assert box.poll() == 137
    rows = json.loads(ketch_cli("sandbox", "list", "--json"))
    assert box.object_id not in [r["sandbox_id"] for r in rows]
    ended = json.loads(ketch_cli("sandbox", "list", "--all", "--json"))
    assert box.object_id in [r["sandbox_id"] for r in ended]


@pytest.mark.spec("X3", "I3", "I4")
def test_untrusted_code_gets_nothing_of_the_host(sb: Any, app: ketch.App, server: Any) -> None:
    from ketch._server.main import sockets_dir

    home = Path(server.home)
    sockets = sockets_dir(home)
    assert (home / "token").exists() and (sockets / "call.sock").exists()
    proc = sb.exec("python3", "/opt/probe/probe.py", str(home), str(server.pid()), str(sockets))
    seen = json.loads(proc.stdout.read())
    assert proc.wait() == 0
    for name in ("token", "secret_key", "store"):
        assert seen[name] == "FileNotFoundError", seen
    assert not seen["call_socket"] and not seen["api_socket"], seen
    assert not seen["server_seen"] and seen["caps"] == 0, seen
    assert seen["env_keys"] == [], seen  # no credential, no ketch runtime on its path
    assert seen["usr_write"] in ("OSError", "PermissionError"), seen
    sb.exec("sh", "-c", "echo mine > /tmp/only-here").wait()
    other = ketch.Sandbox.create(app=app, image=IMAGE)
    try:
        # (The operator's shared directory, KETCH_SANDBOX_SHARE, may show under /tmp.)
        assert "only-here" not in other.exec("ls", "/tmp").stdout.read().split()
        assert "only-here" in sb.exec("ls", "/tmp").stdout.read().split()
    finally:
        other.terminate()


@pytest.mark.spec("X3")
def test_block_network_leaves_only_loopback(app: ketch.App, server: Any) -> None:
    port = int(server.info()["api_port"])  # type: ignore[call-overload]
    code = (
        "import socket,sys\n"
        "try:\n"
        " socket.create_connection(('10.0.2.2', int(sys.argv[1])), timeout=3)\n"
        " print('reached')\n"
        "except OSError as e: print(type(e).__name__)\n"
    )
    connected = ketch.Sandbox.create(app=app)
    blocked = ketch.Sandbox.create(app=app, block_network=True)
    try:
        # Without block_network, the host's loopback is reached through the user-mode stack.
        assert connected.exec("python3", "-c", code, str(port)).stdout.read() == "reached\n"
        assert blocked.exec("python3", "-c", code, str(port)).stdout.read() != "reached\n"
    finally:
        connected.terminate()
        blocked.terminate()


@pytest.mark.spec("X1")
def test_a_function_creates_a_sandbox_from_its_container(server: Any) -> None:
    from supports import sandbox_user

    with sandbox_user.app.run(show_logs=False):
        assert sandbox_user.run_in_sandbox.remote("echo made inside") == "made inside\n"


@pytest.mark.spec("X1")
def test_twenty_sandboxes_at_once(app: ketch.App) -> None:
    def one(i: int) -> str:
        box = ketch.Sandbox.create(app=app)
        try:
            return str(box.exec("sh", "-c", f"echo {i}").stdout.read())
        finally:
            box.terminate()

    with concurrent.futures.ThreadPoolExecutor(20) as pool:
        outs = list(pool.map(one, range(20)))
    assert outs == [f"{i}\n" for i in range(20)]


@pytest.mark.spec("X1")
def test_bad_input_is_refused_and_changes_nothing(app: ketch.App) -> None:
    before = len(list(ketch.Sandbox.list(app_id=app.app_id)))
    with pytest.raises(InvalidError, match="absolute"):
        ketch.Sandbox.create(app=app, workdir="relative")
    with pytest.raises(InvalidError):
        ketch.Sandbox.create(app=app, timeout=0)
    with pytest.raises(InvalidError, match="GPU"):
        ketch.Sandbox.create(app=app, gpu="H100")
    with pytest.raises(InvalidError, match="app="):
        ketch.Sandbox.create()
    assert len(list(ketch.Sandbox.list(app_id=app.app_id))) == before


@pytest.mark.spec("X1", "X2")
def test_the_aio_forms(app: ketch.App) -> None:
    import asyncio

    async def main() -> tuple[list[str], int, list[str], int | None]:
        box = await ketch.Sandbox.create.aio(app=app, tags={"aio": "yes"})
        try:
            proc = await box.exec.aio("sh", "-c", "echo a; echo b")
            lines = [line async for line in proc.stdout]
            code = await proc.wait.aio()
            found = [s.object_id async for s in ketch.Sandbox.list.aio(tags={"aio": "yes"})]
            with_file = await box.open.aio("/tmp/f", "w")
            await with_file.write.aio("x")
            await with_file.close.aio()
            names = await box.ls.aio("/tmp")
            assert box.object_id in found
        finally:
            await box.terminate.aio()
        return lines, code, names, await box.poll.aio()

    lines, code, names, polled = asyncio.run(main())
    assert lines == ["a\n", "b\n"] and code == 0
    assert "f" in names and polled == 137
