"""Sandboxed containers (I3): from inside a function, nothing of the server's state directory
but what it runs is there, the host's processes are out of sight, `/tmp` is the container's
own, the image cannot be changed, and files an image places at absolute paths are there.

Each check reads or writes something a container of an unsandboxed server reaches, so each
fails without the sandbox (KETCH_SANDBOX=off).
"""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path
from typing import Any

import pytest

from supports import sandboxed


@pytest.fixture(autouse=True)
def _sandbox_on(monkeypatch: pytest.MonkeyPatch) -> None:
    """These tests' servers sandbox every container (KETCH_SANDBOX=require); set before
    `fresh_server` starts the server, which reads it from its environment."""
    monkeypatch.setenv("KETCH_SANDBOX", "require")


pytestmark = [
    pytest.mark.spec("I3"),
    pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap is not installed"),
]


def test_the_state_directory_is_out_of_reach(fresh_server: Any) -> None:
    home = Path(fresh_server.home)
    # Another app's source, where the server keeps sources.
    foreign = home / "sources" / ("f" * 64) / "secret_app.py"
    foreign.parent.mkdir(parents=True, exist_ok=True)
    foreign.write_text("API_KEY = 'not yours'\n")
    try:
        with sandboxed.app.run(show_logs=False):
            seen = sandboxed.look.remote(str(home), fresh_server.pid(), [str(foreign)])
    finally:
        shutil.rmtree(foreign.parent)
    for name in ("token", "secret_key", "store", "server_json"):
        assert seen[name] == "FileNotFoundError", (name, seen)
    assert seen["other_sources"] == ["FileNotFoundError"]


def test_the_cover_over_the_state_directory_cannot_be_taken_away(fresh_server: Any) -> None:
    # A container runs as the server's user, root here: without its capabilities dropped
    # it could unmount what hides the state directory and read the token under it.
    with sandboxed.app.run(show_logs=False):
        seen = sandboxed.unhide.remote(str(fresh_server.home))
    assert seen["caps"] == 0, seen
    assert seen["unmounted"] == 0 and seen["token"] == "FileNotFoundError", seen


def test_the_hosts_processes_are_out_of_sight(fresh_server: Any) -> None:
    with sandboxed.app.run(show_logs=False):
        seen = sandboxed.look.remote(str(fresh_server.home), fresh_server.pid(), [])
    assert not seen["server_seen"]
    # Its own pid namespace: the sandbox's init, perhaps a fork-server template, itself.
    assert max(seen["pids"]) < 10 and len(seen["pids"]) <= 4, seen["pids"]


def test_tmp_is_the_containers_own(fresh_server: Any) -> None:
    name = f"from-writer-{uuid.uuid4().hex[:8]}"
    try:
        with sandboxed.app.run(show_logs=False):
            mine = sandboxed.write_tmp.remote(name)
            theirs = sandboxed.list_tmp.remote()
        assert name in mine
        assert name not in theirs
        assert not Path("/tmp", name).exists()
    finally:
        Path("/tmp", name).unlink(missing_ok=True)  # what an unsandboxed container would leave


def test_the_image_cannot_be_changed(fresh_server: Any) -> None:
    # A new file in a system directory, which a venv image shows read-only.
    target = Path("/usr", f"ketch-sandbox-probe-{uuid.uuid4().hex[:8]}")
    try:
        with sandboxed.app.run(show_logs=False):
            first = sandboxed.scribble.remote(str(target))
            second = sandboxed.scribble.remote(str(target))
        assert first == "OSError:absent" and second == "OSError:absent", (first, second)
        assert not target.exists()
    finally:
        target.unlink(missing_ok=True)  # what an unsandboxed container would have left


def test_files_are_at_their_absolute_paths(fresh_server: Any) -> None:
    with sandboxed.app.run(show_logs=False):
        got = sandboxed.placed.remote()
    assert got["/root/note.txt"] == "a note\n"
    assert got["/assets"] == ["one.txt", "two.txt"]
    assert got["/srv/mounted/note.txt"] == "a note\n"
    assert got["/root/mounted_assets"] == ["one.txt", "two.txt"]
    assert got["module"] == "/root/supports/sandboxed.py" and got["cwd"] == "/root", got
    # Placed inside the container only: the host's directories are as they were.
    assert not Path("/assets").exists() and not Path("/root/note.txt").exists()
