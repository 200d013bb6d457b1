"""Volumes end to end (D3, D4, and `volumes=` of A1/A2): mounted into real containers, shared
between functions, used from the SDK and the CLI, kept across `kill -9`, bad input refused."""

from __future__ import annotations

import asyncio
import io
import json
import os
import shutil
import uuid
from pathlib import Path

import pytest
from cli_support import assert_clean_error, ketch, ok, unique_name

import ketch as kt
from ketch.exception import InvalidError, NotFoundError
from ketch.volume import FileEntryType

TEST_ROOT = Path("/tmp/ketch-volume-test")


def _volume_dir(home: Path, vol: kt.Volume) -> Path:
    return home / "volumes" / "main" / vol.object_id


@pytest.mark.spec("D3", "A2")
def test_one_function_writes_another_reads_after_commit_and_reload(server) -> None:
    from supports.volumes_app import MOUNT, app, read, vol, write

    name = f"{uuid.uuid4().hex[:8]}/greeting.txt"
    with app.run():
        wrote = write.remote(name, "hello from the writer")
        got = read.remote(name)
    assert got["text"] == "hello from the writer"
    assert got["container"] != wrote["container"]  # two functions, two containers
    assert wrote["mode"] == "bind"
    assert name in got["listing"]  # the SDK inside the container sees it too
    # It is in the volume's directory on the host, not at the mount path on the host.
    assert (_volume_dir(server.home, vol) / name).read_text() == "hello from the writer"
    assert not (Path(MOUNT) / name).exists()
    assert b"".join(vol.read_file(name)) == b"hello from the writer"


@pytest.mark.spec("D3")
def test_files_put_listed_read_and_removed_from_the_sdk(server, tmp_path: Path) -> None:
    local = tmp_path / "tree"
    (local / "sub").mkdir(parents=True)
    (local / "a.txt").write_text("A")
    (local / "sub" / "b.bin").write_bytes(b"\x00\x01" * 1000)
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(3 * 2**20 + 17))  # several chunks each way
    with kt.Volume.ephemeral() as vol:
        with vol.batch_upload() as batch:
            batch.put_directory(local, "/tree")
            batch.put_file(big, "big.bin")
            batch.put_file(io.BytesIO(b"from memory"), "/mem/x.txt")
        entries = {e.path: e for e in vol.listdir("/", recursive=True)}
        assert set(entries) == {
            "tree",
            "tree/a.txt",
            "tree/sub",
            "tree/sub/b.bin",
            "big.bin",
            "mem",
            "mem/x.txt",
        }
        assert entries["tree"].type == FileEntryType.DIRECTORY
        assert entries["tree/sub/b.bin"].type == FileEntryType.FILE
        assert entries["big.bin"].size == big.stat().st_size and entries["big.bin"].mtime > 0
        assert [e.path for e in vol.listdir("tree")] == ["tree/a.txt", "tree/sub"]
        assert b"".join(vol.read_file("big.bin")) == big.read_bytes()
        sink = io.BytesIO()
        assert vol.read_file_into_fileobj("/mem/x.txt", sink) == 11
        assert sink.getvalue() == b"from memory"

        # Without force nothing is uploaded when a target exists; with it, replaced.
        with pytest.raises(FileExistsError, match=r"tree/a\.txt"), vol.batch_upload() as batch:
            batch.put_file(io.BytesIO(b"new"), "new.txt")
            batch.put_file(io.BytesIO(b"A2"), "tree/a.txt")
        with pytest.raises(FileNotFoundError):
            vol.listdir("new.txt")
        with vol.batch_upload(force=True) as batch:
            batch.put_file(io.BytesIO(b"A2"), "tree/a.txt")
        assert b"".join(vol.read_file("tree/a.txt")) == b"A2"

        vol.copy_files(["tree/a.txt", "mem/x.txt"], "tree/sub")
        assert sorted(e.path for e in vol.listdir("tree/sub")) == [
            "tree/sub/a.txt",
            "tree/sub/b.bin",
            "tree/sub/x.txt",
        ]
        with pytest.raises(InvalidError, match="recursive"):
            vol.remove_file("tree")
        vol.remove_file("tree", recursive=True)
        vol.remove_file("big.bin")
        assert [e.path for e in vol.listdir("/")] == ["mem"]
        with pytest.raises(FileNotFoundError):
            vol.read_file_into_fileobj("big.bin", io.BytesIO())
        vol.commit()
        vol.reload()

        async def async_forms() -> list[str]:
            async with vol.batch_upload.aio() as batch:
                batch.put_file(io.BytesIO(b"async"), "aio.txt")
            data = b"".join([c async for c in vol.read_file.aio("aio.txt")])
            assert data == b"async"
            await vol.commit.aio()
            return [e.path for e in await vol.listdir.aio("/")]

        assert asyncio.run(async_forms()) == ["aio.txt", "mem"]
        vid = vol.object_id
    # An ephemeral volume is gone, files and all, when its block ends.
    assert not (server.home / "volumes" / "main" / vid).exists()
    with pytest.raises(NotFoundError):
        vol.listdir("/")


@pytest.mark.spec("D3")
def test_cli_create_ls_put_get_rm_delete(server, tmp_path: Path) -> None:
    home = server.home
    name = unique_name("cli")
    src = tmp_path / "src"
    (src / "deep").mkdir(parents=True)
    (src / "one.txt").write_text("one")
    (src / "deep" / "two.txt").write_text("two")

    ok(ketch(home, "volume", "create", name))
    assert_clean_error(ketch(home, "volume", "create", name), "already exists")
    assert name in [r["name"] for r in json.loads(ok(ketch(home, "volume", "list", "--json")))]
    ok(ketch(home, "volume", "put", name, str(src / "one.txt")))
    ok(ketch(home, "volume", "put", name, str(src), "/dir"))
    assert_clean_error(
        ketch(home, "volume", "put", name, str(src / "one.txt")), "FileExistsError", "one.txt"
    )
    ok(ketch(home, "volume", "put", name, str(src / "one.txt"), "/", "--force"))
    listing = json.loads(ok(ketch(home, "volume", "ls", name, "/", "-r", "--json")))
    assert {e["path"]: e["type"] for e in listing} == {
        "one.txt": "file",
        "dir": "directory",
        "dir/one.txt": "file",
        "dir/deep": "directory",
        "dir/deep/two.txt": "file",
    }
    assert "dir/" in ok(ketch(home, "volume", "ls", name))
    assert ok(ketch(home, "volume", "get", name, "dir/deep/two.txt", "-")) == "two"
    out = tmp_path / "out"
    out.mkdir()
    ok(ketch(home, "volume", "get", name, "/dir", str(out)))
    assert (out / "dir" / "deep" / "two.txt").read_text() == "two"
    assert (out / "dir" / "one.txt").read_text() == "one"

    assert_clean_error(ketch(home, "volume", "rm", name, "dir"), "recursive")
    ok(ketch(home, "volume", "rm", name, "dir", "-r"))
    assert_clean_error(ketch(home, "volume", "rm", name, "dir"), "FileNotFoundError")
    assert_clean_error(ketch(home, "volume", "ls", name, "missing"), "FileNotFoundError")
    assert_clean_error(ketch(home, "volume", "get", name, "../../etc/passwd", "-"), "..")
    assert_clean_error(
        ketch(home, "volume", "ls", "no-such-volume-x"), "NotFoundError", "no-such-volume-x"
    )
    assert_clean_error(ketch(home, "volume", "create", "bad/name"), "invalid volume name")
    assert_clean_error(
        ketch(home, "volume", "delete", "no-such-volume-x", "-y"), "no-such-volume-x"
    )
    ok(ketch(home, "volume", "delete", name, "-y"))
    assert name not in [r["name"] for r in json.loads(ok(ketch(home, "volume", "list", "--json")))]


@pytest.mark.spec("D4")
def test_volume_survives_kill9_and_restart(fresh_server) -> None:
    vol = kt.Volume.from_name("durable-files", create_if_missing=True)
    with vol.batch_upload() as batch:
        batch.put_file(io.BytesIO(b"still here"), "keep/me.txt")
    vol.commit()
    fresh_server.kill9()
    fresh_server.start()
    again = kt.Volume.from_name("durable-files")
    assert again.object_id == vol.object_id
    assert b"".join(again.read_file("keep/me.txt")) == b"still here"
    assert [e.path for e in again.listdir("keep")] == ["keep/me.txt"]


@pytest.mark.spec("D4")
def test_bad_names_paths_and_missing_volumes_are_clear_errors(server) -> None:
    for bad in ("", "has space", "a/b", "-lead", "x" * 65, 3):
        with pytest.raises(InvalidError, match="invalid volume name"):
            kt.Volume.from_name(bad)  # type: ignore[arg-type]
    with pytest.raises(InvalidError, match="environment"):
        kt.Volume.from_name("fine", environment_name="bad env")
    with pytest.raises(NotFoundError, match="no-such-volume-y"):
        kt.Volume.from_name("no-such-volume-y").listdir("/")
    with kt.Volume.ephemeral() as vol:
        for bad in ("../x", "/a/../../b", "a/\0"):
            with pytest.raises(InvalidError):
                vol.read_file_into_fileobj(bad, io.BytesIO())
        with pytest.raises(InvalidError), vol.batch_upload() as batch:
            batch.put_file(io.BytesIO(b"x"), "../escape.txt")
        # A symlink planted in the volume (as a container could) is listed, not followed.
        root = server.home / "volumes" / "main" / vol.object_id
        os.symlink("/etc", root / "etc-link")
        [entry] = vol.listdir("/")
        assert entry.type == FileEntryType.SYMLINK
        with pytest.raises(InvalidError, match="outside the volume"):
            vol.read_file_into_fileobj("etc-link/hostname", io.BytesIO())
        with (
            pytest.raises(InvalidError, match="outside the volume"),
            vol.batch_upload(force=True) as batch,
        ):
            batch.put_file(io.BytesIO(b"x"), "etc-link/planted")
        assert not Path("/etc/planted").exists()


@pytest.mark.spec("D3", "A3")
def test_bad_mounts_and_a_missing_volume_fail_the_deploy_and_change_nothing(server) -> None:
    app = kt.App(unique_name("bad-mounts"))
    vol = kt.Volume.from_name("whatever", create_if_missing=True)
    for bad in ("relative", "/", "/proc/x", "/usr", "/a/../b"):
        with pytest.raises(InvalidError, match="volumes"):
            app.function(volumes={bad: vol}, serialized=True)(lambda: None)
    with pytest.raises(InvalidError, match="overlap"):
        app.function(volumes={"/d": vol, "/d/e": vol}, serialized=True)(lambda: None)

    from supports.volumes_app import missing

    created = kt.Volume.from_name(unique_name("would-be-created"), create_if_missing=True)
    missing.function(
        volumes={"/tmp/ketch-volume-test/maybe": created}, name="second", serialized=True
    )(lambda: None)
    before = ok(ketch(server.home, "app", "list", "--json"))
    with pytest.raises(NotFoundError, match="no-such-vol"):
        missing.deploy()
    # Nothing changed: no app, and the create_if_missing volume of the other function was
    # not created either, since the deploy was refused as a whole.
    assert ok(ketch(server.home, "app", "list", "--json")) == before
    with pytest.raises(NotFoundError):
        kt.Volume.from_name(created.name or "").listdir("/")
    # The CLI says the same in one line.
    proc = ketch(server.home, "deploy", "tests/supports/volumes_app.py::missing")
    assert_clean_error(proc, "no-such-vol")


@pytest.mark.spec("D3")
def test_a_deleted_volume_stops_new_containers_naming_it(server) -> None:
    from supports.volumes_app import fragile, fragile_vol, peek

    with fragile_vol.batch_upload(force=True) as batch:
        batch.put_file(io.BytesIO(b"x"), "marker")
    with fragile.run():
        assert peek.remote() == ["marker"]
        kt.Volume.delete("fragile-files")
        with pytest.raises(Exception, match=r"fragile-files.*deleted"):
            peek.remote()


@pytest.mark.spec("D3")
def test_path_mapping_fallback_without_a_mount_namespace(fresh_server, monkeypatch) -> None:
    from supports.volumes_app import LINKED, linked, linked_write

    fresh_server.stop()
    monkeypatch.setenv("KETCH_VOLUME_MOUNT", "symlink")
    # The fallback is for unsandboxed containers: in a sandbox, volumes are its own binds.
    monkeypatch.setenv("KETCH_SANDBOX", "off")
    fresh_server.start()
    if os.path.lexists(LINKED):
        os.unlink(LINKED)
    try:
        with linked.run():
            assert linked_write.remote("via link") == {"mode": "symlink", "link": True}
        vol = kt.Volume.from_name("linked-files")
        assert b"".join(vol.read_file("note.txt")) == b"via link"
        assert os.path.realpath(LINKED) == str(_volume_dir(fresh_server.home, vol))
    finally:
        if os.path.islink(LINKED):
            os.unlink(LINKED)


def teardown_module() -> None:
    # The empty mount points the bind mounts needed on the host.
    shutil.rmtree(TEST_ROOT, ignore_errors=True)
