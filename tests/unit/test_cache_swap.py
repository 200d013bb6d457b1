"""Replacing a published cache directory with a rebuilt one (`--force-build`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ketch._images import swap
from ketch._images.swap import replace_published

pytestmark = pytest.mark.spec("A9")


def tree(path: Path, name: str) -> Path:
    path.mkdir(parents=True)
    (path / name).write_text(name)
    return path


@pytest.mark.parametrize("exchange", [True, False])
def test_the_rebuilt_directory_takes_the_place_of_the_old_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, exchange: bool
) -> None:
    if not exchange:  # a system without renameat2: two renames
        monkeypatch.setattr(swap, "_exchange", lambda a, b: False)
    dest = tree(tmp_path / "img", "old")
    new = tree(tmp_path / ".tmp-img", "new")
    replace_published(new, dest)
    assert [p.name for p in dest.iterdir()] == ["new"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["img"]  # the old one is gone


def test_nothing_there_yet_is_a_plain_rename(tmp_path: Path) -> None:
    new = tree(tmp_path / ".tmp-img", "new")
    replace_published(new, tmp_path / "img")
    assert (tmp_path / "img" / "new").is_file() and not new.exists()
