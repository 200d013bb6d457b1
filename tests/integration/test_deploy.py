"""`ketch deploy` and the server's life: on-demand start, stop, kill -9, side-by-side homes.

Each test drives the real CLI and separate Python processes against real servers.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from cli_support import (
    EXAMPLES,
    app_rows,
    assert_clean_error,
    deployed,
    env_for,
    ketch,
    ok,
    python,
    write,
)

from conftest import ServerHandle
from ketch._client.discovery import _gone

CALL_SQUARE = "import ketch; print(ketch.Function.from_name('hello', 'square').remote({x}))"


@pytest.mark.spec("C5")
@pytest.mark.spec("A11")
def test_deploy_then_call_from_another_process(server) -> None:
    proc = ketch(server.home, "deploy", str(EXAMPLES / "hello.py"))
    out = ok(proc)
    assert "Deployed app 'hello'" in out and "square" in out
    assert deployed(server.home, "hello") is not None
    assert ok(python(server.home, CALL_SQUARE.format(x=7))).strip() == "49"


@pytest.mark.spec("C5")
@pytest.mark.spec("W7")
def test_redeploy_keeps_the_app_and_bumps_its_version(server, tmp_path) -> None:
    name = f"redeploy-{uuid.uuid4().hex[:8]}"
    app_file = tmp_path / "redeploy_app.py"
    template = """
        import ketch

        app = ketch.App("{name}")


        @app.function()
        def which() -> str:
            return "{version}"
    """
    write(app_file, template.format(name=name, version="one"))
    ok(ketch(server.home, "deploy", str(app_file)))
    first = deployed(server.home, name)
    write(app_file, template.format(name=name, version="two"))
    ok(ketch(server.home, "deploy", str(app_file)))
    second = deployed(server.home, name)
    assert first is not None and second is not None
    assert second["app_id"] == first["app_id"] and second["version"] == first["version"] + 1
    call = f"import ketch; print(ketch.Function.from_name({name!r}, 'which').remote())"
    assert ok(python(server.home, call)).strip() == "two"
    # --name deploys the same code as another app.
    ok(ketch(server.home, "deploy", str(app_file), "--name", f"{name}-copy"))
    assert deployed(server.home, f"{name}-copy") is not None


@pytest.mark.spec("C5")
def test_deployed_app_survives_server_stop_and_kill9(fresh_server: ServerHandle) -> None:
    home = fresh_server.home
    ok(ketch(home, "deploy", str(EXAMPLES / "hello.py")))
    first_pid = fresh_server.pid()

    assert "ketch server stopped" in ok(ketch(home, "server", "stop"))
    assert fresh_server.pid() is None  # server.json goes with a clean stop
    # The next command that needs a server starts one on demand; the app is back.
    assert ok(python(home, CALL_SQUARE.format(x=7))).strip() == "49"
    second_pid = fresh_server.pid()
    assert second_pid is not None and second_pid != first_pid

    fresh_server.kill9()
    assert ok(python(home, CALL_SQUARE.format(x=8))).strip() == "64"
    third_pid = fresh_server.pid()
    assert third_pid not in (None, second_pid)
    row = deployed(home, "hello")
    assert row is not None and row["version"] == 1


@pytest.mark.spec("C5")
@pytest.mark.spec("C8")
def test_server_start_daemon_status_stop(tmp_path) -> None:
    home = tmp_path / "state"
    fake_home = tmp_path / "user-home"
    fake_home.mkdir()
    # HOME elsewhere: nothing may land in ~/.ketch; uv keeps its usual download cache.
    env: dict[str, Any] = {
        "HOME": str(fake_home),
        "UV_CACHE_DIR": os.environ.get("UV_CACHE_DIR") or str(Path.home() / ".cache/uv"),
    }
    handle = ServerHandle(home)
    try:
        proc = ketch(home, "server", "status", **env)
        assert proc.returncode == 1 and "no ketch server is running" in proc.stdout
        assert json.loads(ketch(home, "server", "status", "--json", **env).stdout) == {
            "running": False
        }

        out = ok(ketch(home, "server", "start", "--daemon", **env))
        pid = handle.pid()
        assert pid is not None and f"started (pid {pid})" in out
        out = ok(ketch(home, "server", "start", "--daemon", **env))
        assert f"already running (pid {pid})" in out

        out = ok(ketch(home, "server", "status", **env))
        assert f"pid {pid}" in out and str(home) in out
        status = json.loads(ok(ketch(home, "server", "status", "--json", **env)))
        assert status["running"] is True and status["pid"] == pid
        assert status["api"].startswith("http://127.0.0.1:")

        # State lives under KETCH_HOME, private to its owner.
        for name in ("server.json", "token", "ketch.db", "server.log", "secret.key"):
            assert (home / name).exists(), name
        assert stat.S_IMODE((home / "token").stat().st_mode) == 0o600
        assert stat.S_IMODE(home.stat().st_mode) == 0o700
        assert not (fake_home / ".ketch").exists()

        assert "ketch server stopped" in ok(ketch(home, "server", "stop", **env))
        assert handle.pid() is None
        assert _gone(pid)  # exited (a zombie until its new parent reaps it counts)
        assert ketch(home, "server", "status", **env).returncode == 1
        assert "no ketch server was running" in ok(ketch(home, "server", "stop", **env))
        assert not (fake_home / ".ketch").exists()
    finally:
        handle.stop()


@pytest.mark.spec("C5")
def test_stop_ignores_a_stale_server_file(tmp_path) -> None:
    home = tmp_path / "stale"
    home.mkdir()
    # A server.json left by a dead server, whose pid now belongs to this very test process.
    (home / "server.json").write_text(
        json.dumps({"pid": os.getpid(), "host": "127.0.0.1", "api_port": 1, "call_port": 1})
    )
    out = ok(ketch(home, "server", "stop"))
    assert "no ketch server was running" in out  # and this process is still alive


@pytest.mark.spec("C8")
def test_two_servers_side_by_side(server, fresh_server: ServerHandle, tmp_path) -> None:
    name = f"side-{uuid.uuid4().hex[:8]}"
    template = """
        import ketch

        app = ketch.App("{name}")


        @app.function()
        def where() -> str:
            return "{label}"
    """
    for handle, label in ((server, "session"), (fresh_server, "fresh")):
        app_file = write(tmp_path / label / "side_app.py", template.format(name=name, label=label))
        ok(ketch(handle.home, "deploy", str(app_file)))
    assert server.pid() != fresh_server.pid()
    assert server.info()["api_port"] != fresh_server.info()["api_port"]
    call = f"import ketch; print(ketch.Function.from_name({name!r}, 'where').remote())"
    assert ok(python(server.home, call)).strip() == "session"
    assert ok(python(fresh_server.home, call)).strip() == "fresh"

    # Each home sees its own apps only.
    fresh_ids = {r["app_id"] for r in app_rows(fresh_server.home)}
    session_ids = {r["app_id"] for r in app_rows(server.home)}
    assert not fresh_ids & session_ids
    assert all(r["name"] in (name, "hello") for r in app_rows(fresh_server.home))

    # Stopping one leaves the other serving.
    ok(ketch(fresh_server.home, "server", "stop"))
    assert ok(python(server.home, call)).strip() == "session"
    assert server.pid() is not None


@pytest.mark.spec("A1")
def test_deploy_needs_a_name(server, tmp_path) -> None:
    app_file = write(
        tmp_path / "nameless.py",
        """
        import ketch

        app = ketch.App()


        @app.function()
        def f():
            return 1
    """,
    )
    assert_clean_error(ketch(server.home, "deploy", str(app_file)), "needs a name")
    ok(ketch(server.home, "deploy", str(app_file), "--name", f"named-{uuid.uuid4().hex[:6]}"))


@pytest.mark.spec("C5")
def test_deploy_of_an_app_without_functions_fails(server, tmp_path) -> None:
    app_file = write(
        tmp_path / "empty_app.py",
        """
        import ketch

        app = ketch.App("empty-app")
    """,
    )
    assert_clean_error(ketch(server.home, "deploy", str(app_file)), "no functions")
    assert deployed(server.home, "empty-app") is None


@pytest.mark.spec("C5")
def test_one_broken_app_does_not_keep_the_server_down(fresh_server: ServerHandle, tmp_path) -> None:
    home = fresh_server.home
    template = """
        import ketch

        app = ketch.App("{name}")


        @app.function()
        def who() -> str:
            return "{name}"
    """
    for name in ("broken-one", "healthy-one"):
        ok(
            ketch(
                home, "deploy", str(write(tmp_path / name / "app.py", template.format(name=name)))
            )
        )
    ok(ketch(home, "server", "stop"))
    # Lose the shipped source of one app (a disk cleaned by hand, a bad restore...).
    spec = json.loads(
        ok(
            python(
                home,
                """
        import json, sqlite3, os
        db = sqlite3.connect(os.path.join(os.environ["KETCH_HOME"], "ketch.db"))
        rows = db.execute("SELECT spec FROM app_versions").fetchall()
        print(json.dumps([json.loads(r[0]) for r in rows]))
    """,
            )
        )
    )
    blob = next(s["source"]["blob"] for s in spec if s["name"] == "broken-one")
    healthy = next(s["source"]["blob"] for s in spec if s["name"] == "healthy-one")
    assert blob != healthy
    (home / "blobs" / blob).unlink()
    shutil.rmtree(home / "sources" / blob)

    call = "import ketch; print(ketch.Function.from_name({!r}, 'who').remote())"
    assert ok(python(home, call.format("healthy-one"))).strip() == "healthy-one"
    proc = python(home, call.format("broken-one"))
    assert proc.returncode != 0 and "NotFoundError" in proc.stderr
    assert "not restored" in (home / "server.log").read_text()


@pytest.mark.spec("C5")
def test_server_start_in_the_foreground(tmp_path) -> None:
    home = tmp_path / "fg"
    handle = ServerHandle(home)
    proc = subprocess.Popen(
        [sys.executable, "-m", "ketch.cli", "server", "start"],
        env=env_for(home),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while handle.pid() is None:
            assert proc.poll() is None, proc.communicate()[0]
            assert time.monotonic() < deadline, "the server did not come up"
            time.sleep(0.1)
        assert handle.pid() == proc.pid  # the command became the server
        assert f"pid {proc.pid}" in ok(ketch(home, "server", "status"))
        proc.send_signal(signal.SIGINT)  # Ctrl-C
        out, _ = proc.communicate(timeout=60)
        assert proc.returncode == 0, out
        assert handle.pid() is None
        assert ketch(home, "server", "status").returncode == 1
    finally:
        proc.kill()
        handle.stop()
