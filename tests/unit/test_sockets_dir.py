"""The server's sockets directory is private: a name made first by someone else is not used."""

from __future__ import annotations

import hashlib
import os
import stat
import tempfile
from pathlib import Path

import pytest

from ketch._server.main import sockets_dir


def _fallback(home: Path) -> Path:
    digest = hashlib.sha256(str(home).encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"ketch-{digest}"


def _deep_home(tmp_path: Path) -> Path:
    home = tmp_path / ("h" * 70)  # too long for socket paths: the /tmp fallback is used
    home.mkdir()
    return home


def _is_private(path: Path) -> bool:
    st = os.lstat(path)
    return stat.S_ISDIR(st.st_mode) and st.st_uid == os.geteuid() and not st.st_mode & 0o077


def test_short_home_keeps_its_sockets_inside() -> None:
    home = Path(tempfile.mkdtemp(prefix="k-", dir="/tmp"))
    try:
        assert sockets_dir(home) == home / "sock"
        assert _is_private(home / "sock")
    finally:
        (home / "sock").rmdir()
        home.rmdir()


def test_deep_home_uses_a_stable_private_fallback(tmp_path: Path) -> None:
    home = _deep_home(tmp_path)
    first = sockets_dir(home)
    assert first == _fallback(home)
    assert sockets_dir(home) == first
    assert _is_private(first)
    first.rmdir()


def test_a_fallback_open_to_others_is_not_used(tmp_path: Path) -> None:
    home = _deep_home(tmp_path)
    planted = _fallback(home)
    planted.mkdir(mode=0o777)
    os.chmod(planted, 0o777)
    try:
        got = sockets_dir(home)
        assert got != planted
        assert _is_private(got)
        got.rmdir()
    finally:
        planted.rmdir()


def test_a_fallback_that_is_a_link_is_not_used(tmp_path: Path) -> None:
    home = _deep_home(tmp_path)
    target = tmp_path / "elsewhere"
    target.mkdir(mode=0o700)
    planted = _fallback(home)
    planted.symlink_to(target)
    try:
        got = sockets_dir(home)
        assert got not in (planted, target)
        assert _is_private(got)
        got.rmdir()
    finally:
        planted.unlink()


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to plant a directory for another uid")
def test_a_fallback_owned_by_another_user_is_not_used(tmp_path: Path) -> None:
    home = _deep_home(tmp_path)
    planted = _fallback(home)
    planted.mkdir(mode=0o700)
    os.chown(planted, 65534, 65534)
    try:
        got = sockets_dir(home)
        assert got != planted
        assert _is_private(got)
        got.rmdir()
    finally:
        planted.rmdir()
