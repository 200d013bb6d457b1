"""The image inventory on fake trees: sizes with shared layers counted once, prefixes,
what rm and prune remove and what they keep."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ketch._server.image_store import ImageStore, disk_usage
from ketch.exception import InvalidError, NotFoundError

pytestmark = pytest.mark.spec("A9")

BASE = "bases/b0"
USER = [{"app": "a", "app_id": "ap-1", "environment": "main", "function": "f", "state": "x"}]


def blob(path: Path, n: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x" * n)


def venv(images: Path, name: str) -> None:
    blob(images / name / "venv" / "lib.so", 40_000)
    (images / name / ".ok").write_text(json.dumps({"hash": name, "python_version": "3.11"}))


def rootfs(images: Path, cache: Path, name: str, layers: list[str]) -> None:
    for unit in layers:
        sub = "root" if unit.startswith("bases/") else "diff"
        if not (cache / unit).exists():
            blob(cache / unit / sub / "data", 100_000)
    rels = [f"{u}/{'root' if u.startswith('bases/') else 'diff'}" for u in layers]
    (images / name).mkdir(parents=True)
    (images / name / "rootfs.json").write_text(json.dumps({"hash": name, "layers": rels}))


@pytest.fixture
def tree(tmp_path: Path) -> tuple[Path, Path]:
    images, cache = tmp_path / "images", tmp_path / "cache"
    venv(images, "aaaa1111")
    rootfs(images, cache, "bbbb2222", [BASE, "layers/l1", "layers/l2"])
    rootfs(images, cache, "bbbb3333", [BASE, "layers/l1", "layers/l3"])
    blob(cache / "layers" / "orphan" / "diff" / "data", 100_000)
    return images, cache


def store(tree: tuple[Path, Path], shared: bool = False) -> ImageStore:
    return ImageStore(tree[0], tree[1], shared_cache=shared)


def test_disk_usage_counts_a_hard_linked_file_once(tmp_path: Path) -> None:
    blob(tmp_path / "a", 100_000)
    (tmp_path / "b").hardlink_to(tmp_path / "a")
    one = disk_usage(tmp_path / "a")
    assert one >= 100_000
    assert disk_usage(tmp_path) < 2 * one


def test_listing_counts_shared_layers_once_in_the_total(tree: tuple[Path, Path]) -> None:
    data = store(tree).listing({"bbbb2222": USER})
    rows = {r["hash"]: r for r in data["images"]}
    assert {r["kind"] for r in rows.values()} == {"venv", "rootfs"}
    b2, b3 = rows["bbbb2222"], rows["bbbb3333"]
    assert b2["layers"] == 3 and b2["used_by"] == USER and rows["bbbb3333"]["used_by"] == []
    # base and l1 are shared: two of each image's three layers.
    assert b2["shared"] > 0 and b2["shared"] == b3["shared"]
    assert b2["size"] > b2["shared"]
    assert data["shared_layers"] == 2
    each_alone = sum(r["size"] for r in rows.values())
    assert data["total"] == each_alone - b2["shared"]  # the shared layers counted once


def test_prefixes_resolve_to_one_image_or_say_why_not(tree: tuple[Path, Path]) -> None:
    s = store(tree)
    entries = s.entries()
    assert s.resolve("aaaa", entries).hash == "aaaa1111"
    with pytest.raises(InvalidError, match="matches 2 images"):
        s.resolve("bbbb", entries)
    with pytest.raises(NotFoundError, match="no image's hash starts with 'cccc'"):
        s.resolve("cccc", entries)
    with pytest.raises(InvalidError, match="at least 4 hex digits"):
        s.resolve("aa", entries)


def test_rm_keeps_the_layers_another_image_names(tree: tuple[Path, Path]) -> None:
    images, cache = tree
    s = store(tree)
    out = s.remove(s.resolve("bbbb2222", s.entries()))
    assert out["layers"] == ["layers/l2"] and out["freed"] > 0
    assert not (images / "bbbb2222").exists() and not (cache / "layers/l2").exists()
    assert (cache / "layers/l1").exists() and (cache / BASE).exists()


def test_prune_removes_unused_images_and_only_their_own_layers(tree: tuple[Path, Path]) -> None:
    images, cache = tree
    planned = store(tree).prune({"bbbb2222": USER}, dry_run=True)
    assert (images / "aaaa1111").exists()  # a dry run removes nothing
    out = store(tree).prune({"bbbb2222": USER})
    assert out["freed"] == planned["freed"] > 0
    assert sorted(i["hash"] for i in out["images"]) == ["aaaa1111", "bbbb3333"]
    assert sorted(out["layers"]) == ["layers/l3", "layers/orphan"]
    assert sorted(p.name for p in images.iterdir()) == ["bbbb2222"]
    assert (cache / "layers/l1").exists() and (cache / "layers/l2").exists()
    assert (cache / BASE).exists()


def test_prune_of_a_shared_cache_leaves_layers_no_image_of_its_own_names(
    tree: tuple[Path, Path],
) -> None:
    out = store(tree, shared=True).prune({})
    assert "layers/orphan" not in out["layers"] and out["unrecorded_kept"] == 1
    assert (tree[1] / "layers/orphan").exists()
    assert (tree[1] / BASE).exists()  # bases stay unless asked for


def test_prune_with_bases_removes_an_unused_base(tree: tuple[Path, Path]) -> None:
    out = store(tree).prune({}, bases=True)
    assert BASE in out["layers"] and not (tree[1] / BASE).exists()


def test_prune_removes_what_killed_builds_left(tree: tuple[Path, Path]) -> None:
    images = tree[0]
    blob(images / ".tmp-abc-123" / "venv" / "x", 10)
    blob(images / ".aaaa1111.old-1234abcd" / "x", 10)
    out = store(tree).prune({"aaaa1111": USER, "bbbb2222": USER, "bbbb3333": USER})
    assert out["leftovers"] == 2 and out["images"] == []
    assert sorted(p.name for p in images.iterdir()) == ["aaaa1111", "bbbb2222", "bbbb3333"]


def test_half_written_images_are_not_listed(tree: tuple[Path, Path]) -> None:
    images = tree[0]
    (images / "dddd4444").mkdir()
    (images / "eeee5555").mkdir()
    (images / "eeee5555" / "rootfs.json").write_text("{not json")
    assert "dddd4444" not in {e.hash for e in store(tree).entries()}
    assert "eeee5555" not in {e.hash for e in store(tree).entries()}
