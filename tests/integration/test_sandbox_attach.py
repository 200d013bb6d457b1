"""The sandbox agent where a function runs (issue 15): `ketch.forward` from inside a
container, `ketch container exec`, and `ketch shell APP::FUNCTION` (a sandbox on the
function's image, secrets, volumes and source)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from typing import Any

import httpx
import pytest

import ketch
from supports import attach_app

pytestmark = pytest.mark.skipif(shutil.which("bwrap") is None, reason="needs bubblewrap")


def _cli(server: Any, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ketch.cli", *args],
        input=stdin, capture_output=True, text=True, timeout=120,
        env={**os.environ, **server.env},
    )  # fmt: skip


@pytest.mark.spec("X2")
def test_forward_gives_a_url_for_a_port_of_the_container(server: Any) -> None:
    name = f"fw-{uuid.uuid4().hex[:8]}"
    with attach_app.app.run(show_logs=False):
        call = attach_app.forwarded.spawn(name)
        q = ketch.Queue.from_name(name, create_if_missing=True)
        url = q.get(timeout=60)
        assert httpx.get(url, timeout=10).text == "hello through the tunnel"
        q.put("done", partition="done")
        assert call.get(timeout=60) == "done"
        # The tunnel closed with the block.
        with pytest.raises(httpx.HTTPError):
            httpx.get(url, timeout=5)


def test_forward_outside_a_container_is_refused() -> None:
    with (
        pytest.raises(ketch.exception.InvalidError, match="inside a ketch container"),
        ketch.forward(8000),
    ):
        pass


def test_container_exec_runs_in_a_running_container(server: Any) -> None:
    name = f"ex-{uuid.uuid4().hex[:8]}"
    with attach_app.app.run(show_logs=False):
        call = attach_app.hold.spawn(name)
        q = ketch.Queue.from_name(name, create_if_missing=True)
        assert q.get(timeout=60) == "running"
        rows = json.loads(_cli(server, "container", "list", "--json").stdout)
        cid = next(r["container_id"] for r in rows if r["function"] == "hold")
        done = _cli(server, "container", "exec", cid, "--", "sh", "-c",
                    "echo $ATTACH_SECRET; ls /proc | grep -c '^[0-9]'; exit 4")  # fmt: skip
        assert done.returncode == 4, done.stderr
        secret, procs = done.stdout.split()
        assert secret == "attach-value"
        # In the container's own pid namespace: its runtime, the agent, the shell...
        assert int(procs) < 20
        q.put("done", partition="done")
        assert call.get(timeout=60) == "done"
    missing = _cli(server, "container", "exec", "ta-none", "--", "true")
    assert missing.returncode != 0 and "not running" in missing.stderr


def test_shell_in_a_functions_image_with_its_secrets_and_source(server: Any) -> None:
    attach_app.app.deploy(name="attach-shell")
    try:
        script = "echo $ATTACH_SECRET; ls /root/supports/attach_app.py; exit 5\n"
        done = _cli(server, "shell", "attach-shell::hold", "--cmd", "sh", stdin=script)
        assert done.returncode == 5, done.stderr
        assert done.stdout.split() == ["attach-value", "/root/supports/attach_app.py"]
        bad = _cli(server, "shell", "attach-shell::nope")
        assert bad.returncode != 0 and "no function 'nope'" in bad.stderr
        rows = json.loads(_cli(server, "sandbox", "list", "--json").stdout)
        assert not [r for r in rows if r["tags"].get("shell")], "the shell's sandbox ended"
    finally:
        _cli(server, "app", "stop", "attach-shell")
