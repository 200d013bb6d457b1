"""The sandbox's bwrap command line (I3), as a pure function of what a container may see."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ketch._backends import sandbox
from ketch._backends.sandbox import SandboxSpec
from ketch._server.launch import _placed

pytestmark = pytest.mark.spec("I3")


def _pairs(argv: list[str], flag: str) -> list[tuple[str, str]]:
    return [(argv[i + 1], argv[i + 2]) for i, a in enumerate(argv) if a == flag]


def test_the_state_directory_is_hidden_then_only_what_runs_is_bound() -> None:
    spec = SandboxSpec(
        hide=("/var/lib/ketch-home",),
        read_only=(("/var/lib/ketch-home/images/h", "/var/lib/ketch-home/images/h"),),
        read_write=(("/data/vol", "/mnt/vol"),),
    )
    argv = sandbox.wrap("bwrap", spec, ["python", "-m", "ketch._runtime"], "/srv")
    tmpfs = [argv[i + 1] for i, a in enumerate(argv) if a == "--tmpfs"]
    assert "/tmp" in tmpfs and "/var/lib/ketch-home" in tmpfs
    ro = _pairs(argv, "--ro-bind")
    # The hidden directory comes before the image bound back into it, or it would cover it.
    hide_at = argv.index("/var/lib/ketch-home")
    bind_at = argv.index("--ro-bind", hide_at)
    assert ("/var/lib/ketch-home/images/h", "/var/lib/ketch-home/images/h") in ro
    assert argv[bind_at + 1].startswith("/var/lib/ketch-home/images")
    assert ("/data/vol", "/mnt/vol") in _pairs(argv, "--bind")
    assert "--unshare-pid" in argv and "--die-with-parent" in argv
    assert argv[-4:] == ["--", "python", "-m", "ketch._runtime"]
    assert argv[argv.index("--chdir") + 1] == "/srv"


def test_a_path_the_host_lacks_gets_a_writable_parent() -> None:
    # /root exists on the host; /root/ketch-unit-probe does not: /root is rebuilt on a tmpfs
    # with its own entries bound one by one, so the new file can be mounted in it.
    target = "/root/ketch-unit-probe-file"
    assert not os.path.lexists(target)
    spec = SandboxSpec(read_only=(("/etc/hostname", target),))
    argv = sandbox.wrap("bwrap", spec, ["true"], "/")
    tmpfs = [argv[i + 1] for i, a in enumerate(argv) if a == "--tmpfs"]
    assert "/root" in tmpfs
    ro = _pairs(argv, "--ro-bind")
    for name in os.listdir("/root"):
        path = os.path.join("/root", name)
        if not os.path.islink(path):
            assert (path, path) in ro
    assert ("/root", "/root") not in ro


def test_an_existing_path_is_mounted_over_as_it_is() -> None:
    spec = SandboxSpec(read_only=(("/etc/hostname", "/etc/hosts"),))
    argv = sandbox.wrap("bwrap", spec, ["true"], "/")
    tmpfs = [argv[i + 1] for i, a in enumerate(argv) if a == "--tmpfs"]
    assert "/etc" not in tmpfs
    assert ("/etc", "/etc") in _pairs(argv, "--ro-bind")


def test_files_placed_by_remote_path(tmp_path: Path) -> None:
    (tmp_path / "root").mkdir()
    (tmp_path / "root" / "app.py").write_text("x")
    (tmp_path / "ketch-unit-assets").mkdir()
    (tmp_path / "ketch-unit-assets" / "a.txt").write_text("a")
    (tmp_path / ".ok").write_text("")
    got = dict((inside, host) for host, inside in _placed(tmp_path, Path("/")))
    # /root is the host's: entered, its new file bound alone; /ketch-unit-assets is bound whole.
    assert got == {
        "/root/app.py": str(tmp_path / "root" / "app.py"),
        "/ketch-unit-assets": str(tmp_path / "ketch-unit-assets"),
    }


def test_modes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KETCH_SANDBOX", "off")
    assert sandbox.bwrap_path() is None
    monkeypatch.setenv("KETCH_SANDBOX", "sometimes")
    with pytest.raises(RuntimeError, match="KETCH_SANDBOX"):
        sandbox.bwrap_path()
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.setenv("KETCH_SANDBOX", "auto")
    assert sandbox.bwrap_path() is None
    monkeypatch.setenv("KETCH_SANDBOX", "require")
    with pytest.raises(RuntimeError, match="bubblewrap"):
        sandbox.bwrap_path()
