"""Volume path rules: mount paths (SDK and server) and paths inside a volume (server)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ketch._server import volumes as vfs
from ketch._utils.options import validate_function_options
from ketch._utils.volume_paths import check_mount_path, check_mount_set
from ketch.exception import InvalidError


@pytest.mark.spec("D3")
def test_mount_paths_are_absolute_normalised_and_outside_system_dirs() -> None:
    assert check_mount_path("/data") == "/data"
    assert check_mount_path("/root/models/") == "/root/models"
    assert check_mount_path("/a//b/./c") == "/a/b/c"
    for bad in (
        "data",
        "",
        "/",
        "/a/../b",
        "/etc",
        "/usr/local/x",
        "/proc/1",
        "/dev/shm",
        "/sys",
        "/bin",
        "/data\0x",
        3,
        None,
    ):
        with pytest.raises(InvalidError, match="volumes"):
            check_mount_path(bad)
    # Sharing a prefix is not nesting.
    check_mount_set(["/data", "/data2", "/models"])
    with pytest.raises(InvalidError, match="overlap"):
        check_mount_set(["/data", "/data/sub"])
    with pytest.raises(InvalidError, match="overlap"):
        check_mount_set(["/x/y/z", "/x"])
    with pytest.raises(InvalidError, match="twice"):
        check_mount_set(["/data", "/data"])


@pytest.mark.spec("A2")
def test_function_options_refuse_bad_mounts_at_decoration() -> None:
    vol = object()
    with pytest.raises(InvalidError, match="system directory"):
        validate_function_options({"volumes": {"/etc/app": vol}}, is_generator=False, is_web=False)
    with pytest.raises(InvalidError, match="overlap"):
        validate_function_options(
            {"volumes": {"/data": vol, "/data/x": vol}}, is_generator=False, is_web=False
        )


@pytest.mark.spec("D3")
def test_paths_inside_a_volume_cannot_escape(tmp_path: Path) -> None:
    root = tmp_path / "vol"
    root.mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_text("no")
    assert vfs.volume_path(root, "/a/b.txt") == root / "a" / "b.txt"
    assert vfs.volume_path(root, "a/b.txt") == root / "a" / "b.txt"
    assert vfs.volume_path(root, "/") == root
    for bad in ("../outside/secret", "/a/../../x", "a/\0"):
        with pytest.raises(InvalidError):
            vfs.volume_path(root, bad)
    with pytest.raises(InvalidError):
        vfs.volume_path(root, "/", allow_root=False)
    # A symlink planted inside the volume (say by a container) leads nowhere.
    os.symlink(outside, root / "link")
    with pytest.raises(InvalidError, match="outside"):
        vfs.volume_path(root, "link/secret")
    with pytest.raises(InvalidError, match="outside"):
        vfs.open_for_read(root, "link")
    with pytest.raises(InvalidError, match="outside"):
        vfs.Upload(root, tmp_path, "link/new", force=True)
    # The link itself is listed (not followed) and can be removed.
    [entry] = vfs.list_entries(root, "/", recursive=True)
    assert entry["path"] == "link" and entry["type"] == vfs.SYMLINK
    vfs.remove(root, "link", recursive=False)
    assert (outside / "secret").read_text() == "no"


@pytest.mark.spec("D3")
def test_file_operations(tmp_path: Path) -> None:
    root, staging = tmp_path / "vol", tmp_path / "staging"
    root.mkdir()
    staging.mkdir()

    def put(path: str, data: bytes, force: bool = False) -> int:
        up = vfs.Upload(root, staging, path, force=force)
        up.write(data)
        return up.finish()

    assert put("/d/one.txt", b"1") == 1
    put("d/sub/two.txt", b"22")
    with pytest.raises(FileExistsError):
        put("d/one.txt", b"x")
    put("d/one.txt", b"111", force=True)
    assert (root / "d" / "one.txt").read_bytes() == b"111"
    with pytest.raises(IsADirectoryError):
        put("d", b"x", force=True)
    with pytest.raises(NotADirectoryError):
        put("d/one.txt/under", b"x", force=True)
    assert not list(staging.iterdir())  # a refused upload leaves nothing behind
    assert [e["path"] for e in vfs.list_entries(root, "d", recursive=False)] == [
        "d/one.txt",
        "d/sub",
    ]
    assert sorted(e["path"] for e in vfs.list_entries(root, "/", recursive=True)) == [
        "d",
        "d/one.txt",
        "d/sub",
        "d/sub/two.txt",
    ]
    [f] = vfs.list_entries(root, "d/sub/two.txt", recursive=False)
    assert (f["type"], f["size"]) == (vfs.FILE, 2)
    with pytest.raises(FileNotFoundError):
        vfs.list_entries(root, "nope", recursive=False)
    fd, size = vfs.open_for_read(root, "d/one.txt")
    assert size == 3 and b"".join(vfs.read_chunks(fd)) == b"111"
    with pytest.raises(IsADirectoryError):
        vfs.open_for_read(root, "d")
    assert vfs.existing(root, ["d/one.txt", "d/zzz"]) == ["d/one.txt"]
    vfs.copy(root, ["d/one.txt"], "copy.txt", recursive=False)
    assert (root / "copy.txt").read_bytes() == b"111"
    with pytest.raises(InvalidError, match="recursive"):
        vfs.copy(root, ["d"], "e", recursive=False)
    vfs.copy(root, ["d"], "e", recursive=True)
    assert (root / "e" / "sub" / "two.txt").read_bytes() == b"22"
    with pytest.raises(InvalidError, match="recursive"):
        vfs.remove(root, "e", recursive=False)
    vfs.remove(root, "e", recursive=True)
    with pytest.raises(FileNotFoundError):
        vfs.remove(root, "e", recursive=True)
    with pytest.raises(InvalidError):
        vfs.remove(root, "/", recursive=True)


@pytest.mark.spec("A1", "D3")
def test_app_and_function_volumes_merge_into_the_deploy_spec() -> None:
    from ketch.volume import Volume, volume_mounts

    shared = Volume.from_name("shared")
    own = Volume.from_name("own", environment_name="dev", create_if_missing=True)
    mounts = volume_mounts("f", {"/data": shared, "/cache/": shared}, {"/data": own})
    assert mounts == [
        {"mount": "/cache", "name": "shared", "environment": None, "create_if_missing": False},
        {"mount": "/data", "name": "own", "environment": "dev", "create_if_missing": True},
    ]
    with pytest.raises(InvalidError, match=r"ketch\.Volume"):
        volume_mounts("f", {}, {"/data": "shared"})
    with pytest.raises(InvalidError, match="overlap"):
        volume_mounts("f", {"/data": shared}, {"/data/x": own})
    with pytest.raises(InvalidError, match="system directory"):
        volume_mounts("f", {"/etc/x": shared}, {})
    with pytest.raises(InvalidError, match=r"Volume\.from_name"):
        Volume()
