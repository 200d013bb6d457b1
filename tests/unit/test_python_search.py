"""Finding installed interpreters where `uv python find` misses them: fake pyenv and uv
trees and system directories, built in tmp_path."""

from __future__ import annotations

from pathlib import Path

import pytest

from ketch._images.pythons import PythonNotFound, Search, find_installed

pytestmark = pytest.mark.spec("A9")


def exe(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n")
    path.chmod(0o755)
    return path


def search(tmp_path: Path, *, uv: bool = True) -> Search:
    return Search(
        tmp_path / "pyenv",
        tmp_path / "uv" if uv else None,
        (tmp_path / "usr-bin", tmp_path / "usr-local-bin"),
    )


def test_pyenv_version_installed_but_not_selected_is_found(tmp_path: Path) -> None:
    exe(tmp_path / "pyenv/versions/3.11.7/bin/python3.11")
    want = exe(tmp_path / "pyenv/versions/3.12.1/bin/python3.12")
    assert find_installed("3.12", search(tmp_path)) == want


def test_highest_patch_release_wins_numerically(tmp_path: Path) -> None:
    exe(tmp_path / "pyenv/versions/3.12.9/bin/python3.12")
    newest = exe(tmp_path / "pyenv/versions/3.12.10/bin/python3.12")
    assert find_installed("3.12", search(tmp_path)) == newest


def test_dev_free_threaded_and_other_minor_versions_are_not_taken(tmp_path: Path) -> None:
    exe(tmp_path / "pyenv/versions/3.13-dev/bin/python3.13")
    exe(tmp_path / "pyenv/versions/3.13.0t/bin/python3.13")
    exe(tmp_path / "pyenv/versions/3.1.3/bin/python3.1")
    exe(tmp_path / "uv/cpython-3.13.0+freethreaded-linux-x86_64-gnu/bin/python3.13")
    assert find_installed("3.13", search(tmp_path)) is None
    assert (
        find_installed("3.1", search(tmp_path)) == tmp_path / "pyenv/versions/3.1.3/bin/python3.1"
    )


def test_uv_managed_interpreter_is_found(tmp_path: Path) -> None:
    exe(tmp_path / "uv/cpython-3.10.4-linux-x86_64-gnu/bin/python3.10")
    want = exe(tmp_path / "uv/cpython-3.10.14-linux-x86_64-gnu/bin/python3.10")
    assert find_installed("3.10", search(tmp_path)) == want
    assert find_installed("3.10", search(tmp_path, uv=False)) is None


def test_system_directories_are_searched_last(tmp_path: Path) -> None:
    local = exe(tmp_path / "usr-local-bin/python3.9")
    assert find_installed("3.9", search(tmp_path)) == local
    system = exe(tmp_path / "usr-bin/python3.9")
    assert find_installed("3.9", search(tmp_path)) == system
    pyenv = exe(tmp_path / "pyenv/versions/3.9.18/bin/python3.9")
    assert find_installed("3.9", search(tmp_path)) == pyenv


def test_a_version_directory_without_its_interpreter_is_skipped(tmp_path: Path) -> None:
    (tmp_path / "pyenv/versions/3.12.5/bin").mkdir(parents=True)
    not_executable = tmp_path / "pyenv/versions/3.12.6/bin/python3.12"
    exe(not_executable).chmod(0o644)
    older = exe(tmp_path / "pyenv/versions/3.12.1/bin/python3.12")
    assert find_installed("3.12", search(tmp_path)) == older


def test_pyenv_root_comes_from_the_environment(tmp_path: Path) -> None:
    assert Search.from_env({"PYENV_ROOT": str(tmp_path / "p")}, None).pyenv_root == tmp_path / "p"
    assert Search.from_env({"HOME": str(tmp_path)}, None).pyenv_root == tmp_path / ".pyenv"


def test_refusal_names_the_places_searched_and_what_to_install(tmp_path: Path) -> None:
    message = str(PythonNotFound("3.12", ["uv python find", *search(tmp_path).describe()]))
    assert "Python 3.12 is not installed" in message
    assert str(tmp_path / "pyenv" / "versions") in message
    assert "uv python install 3.12" in message and "pyenv install 3.12" in message
