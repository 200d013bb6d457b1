"""Pure tests of `ketch.Image`: validation, flattening, spec contents and content hashing."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from ketch.exception import InvalidError
from ketch.image import Image, hash_build_spec

pytestmark = pytest.mark.spec("A9")


@pytest.fixture
def on_sys_path(tmp_path: Path) -> Iterator[Path]:
    src = tmp_path / "pysrc"
    src.mkdir()
    sys.path.insert(0, str(src))
    importlib.invalidate_caches()
    try:
        yield src
    finally:
        sys.path.remove(str(src))
        importlib.invalidate_caches()


def test_debian_slim_defaults_to_local_python() -> None:
    expected = f"{sys.version_info.major}.{sys.version_info.minor}"
    assert Image.debian_slim().spec()["python_version"] == expected
    assert Image.debian_slim("3.12").python_version == "3.12"


@pytest.mark.parametrize("bad", ["3", "2.7", "3.11.2", "py3.11", "", "3.x", 311])
def test_debian_slim_rejects_bad_python_version(bad: object) -> None:
    with pytest.raises(InvalidError, match=r"3\.X"):
        Image.debian_slim(bad)  # type: ignore[arg-type]


def test_methods_return_new_images_and_leave_the_old_one_alone() -> None:
    base = Image.debian_slim("3.11")
    before = base.spec()
    derived = base.pip_install("six").env({"A": "1"}).workdir("/app")
    assert derived is not base
    assert base.spec() == before
    assert [s["type"] for s in derived.spec()["steps"]] == ["pip_install", "env", "workdir"]
    with pytest.raises(AttributeError):
        base._layers = ()


def test_spec_returns_fresh_dicts() -> None:
    image = Image.debian_slim("3.11").env({"A": "1"})
    spec = image.spec()
    spec["steps"][0]["vars"]["A"] = "changed"
    assert image.spec()["steps"][0]["vars"] == {"A": "1"}


def test_packages_are_flattened() -> None:
    image = Image.debian_slim("3.11").pip_install("a", ["b", ["c", "d"]], ("e",))
    assert image.spec()["steps"][0]["packages"] == ["a", "b", "c", "d", "e"]
    cmds = Image.debian_slim("3.11").run_commands("echo 1", ["echo 2"]).spec()["steps"][0]
    assert cmds == {"type": "run_commands", "commands": ["echo 1", "echo 2"]}


@pytest.mark.parametrize("bad", [5, None, b"six", {"six": 1}])
def test_non_string_packages_are_rejected(bad: object) -> None:
    with pytest.raises(InvalidError):
        Image.debian_slim("3.11").pip_install("ok", bad)  # type: ignore[arg-type]
    with pytest.raises(InvalidError):
        Image.debian_slim("3.11").apt_install([bad])  # type: ignore[list-item]


def test_empty_steps_are_no_ops() -> None:
    base = Image.debian_slim("3.11")
    assert base.pip_install().spec() == base.spec()
    assert base.uv_pip_install([]).spec() == base.spec()
    assert base.run_commands().spec() == base.spec()
    assert base.apt_install().spec() == base.spec()
    assert base.env({}).spec() == base.spec()


def test_pip_options_are_recorded() -> None:
    step = (
        Image.debian_slim("3.11")
        .pip_install(
            "x",
            index_url="https://idx/simple",
            extra_index_url="https://extra/simple",
            find_links="/wheels",
            pre=True,
            extra_options="--no-deps",
        )
        .spec()["steps"][0]
    )
    assert step == {
        "type": "pip_install",
        "packages": ["x"],
        "index_url": "https://idx/simple",
        "extra_index_url": "https://extra/simple",
        "find_links": "/wheels",
        "pre": True,
        "extra_options": "--no-deps",
    }


def test_bad_option_types_are_rejected() -> None:
    base = Image.debian_slim("3.11")
    with pytest.raises(InvalidError):
        base.pip_install("x", pre="yes")  # type: ignore[arg-type]
    with pytest.raises(InvalidError):
        base.pip_install("x", index_url=3)  # type: ignore[arg-type]
    with pytest.raises(InvalidError):
        base.env({"A": 1})  # type: ignore[dict-item]
    with pytest.raises(InvalidError):
        base.workdir("")


def test_spec_is_json_and_hash_is_stable() -> None:
    def make() -> Image:
        return (
            Image.debian_slim("3.11")
            .pip_install("six", pre=True)
            .env({"B": "2", "A": "1"})
            .workdir("/w")
        )

    spec = make().spec()
    assert json.loads(json.dumps(spec)) == spec
    assert make().content_hash() == make().content_hash()
    assert hash_build_spec(json.loads(json.dumps(spec))) == make().content_hash()
    assert len(make().content_hash()) == 64


def test_hash_is_sensitive_to_every_build_input() -> None:
    base = Image.debian_slim("3.11")
    variants = [
        base,
        Image.debian_slim("3.12"),
        base.pip_install("six"),
        base.pip_install("six==1.16.0"),
        base.pip_install("six", pre=True),
        base.pip_install("six", index_url="https://i/simple"),
        base.pip_install("six", extra_options="--no-deps"),
        base.uv_pip_install("six"),
        base.pip_install("six", "attrs"),
        base.pip_install("attrs", "six"),
        base.env({"A": "1"}),
        base.env({"A": "2"}),
        base.workdir("/a"),
        base.workdir("/b"),
        base.run_commands("true"),
        base.apt_install("curl"),
        base.env({"A": "1"}).pip_install("six"),
        base.pip_install("six").env({"A": "1"}),
    ]
    hashes = [v.content_hash() for v in variants]
    assert len(set(hashes)) == len(hashes)


def test_copied_file_content_and_place_change_the_hash(tmp_path: Path) -> None:
    f = tmp_path / "data.txt"
    f.write_text("one")
    base = Image.debian_slim("3.11")
    h1 = base.add_local_file(f, "/data/data.txt", copy=True).content_hash()
    assert base.add_local_file(f, "/other.txt", copy=True).content_hash() != h1
    f.write_text("two")
    assert base.add_local_file(f, "/data/data.txt", copy=True).content_hash() != h1
    assert h1 != base.content_hash()


def test_copied_file_hash_ignores_local_location(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "x.txt").write_text("same")
    (tmp_path / "b" / "x.txt").write_text("same")
    base = Image.debian_slim("3.11")
    assert (
        base.add_local_file(tmp_path / "a" / "x.txt", "/x.txt", copy=True).content_hash()
        == base.add_local_file(tmp_path / "b" / "x.txt", "/x.txt", copy=True).content_hash()
    )


def test_mounted_files_do_not_change_the_build_hash(tmp_path: Path) -> None:
    f = tmp_path / "data.txt"
    f.write_text("one")
    base = Image.debian_slim("3.11").pip_install("six")
    image = base.add_local_file(f, "/data.txt")
    spec1 = image.spec()
    f.write_text("two")
    spec2 = image.spec()
    assert image.content_hash() == base.content_hash()
    assert spec1["files"][0]["sha256"] != spec2["files"][0]["sha256"]
    assert spec1["files"][0]["copy"] is False


def test_files_entries_describe_local_and_remote(tmp_path: Path) -> None:
    f = tmp_path / "data.txt"
    f.write_text("x")
    spec = (
        Image.debian_slim("3.11")
        .pip_install("six")
        .add_local_file(str(f), "/etc/app/", copy=True)
        .add_local_dir(tmp_path, "/srv")
        .spec()
    )
    copied, mounted = spec["files"]
    assert copied["local_path"] == str(f.resolve())
    assert copied["remote_path"] == "/etc/app/data.txt"
    assert copied["kind"] == "file"
    assert copied["copy"] is True
    assert copied["position"] == 1
    assert len(copied["sha256"]) == 64
    assert mounted["kind"] == "dir"
    assert mounted["copy"] is False
    assert mounted["local_path"] == str(tmp_path.resolve())


def test_dir_hash_skips_bytecode_and_honours_ignore(tmp_path: Path) -> None:
    d = tmp_path / "d"
    (d / "sub").mkdir(parents=True)
    (d / "a.py").write_text("a")
    (d / "sub" / "b.py").write_text("b")

    def dir_hash(ignore: list[str] | None = None) -> str:
        image = Image.debian_slim("3.11").add_local_dir(d, "/d", ignore=ignore or [])
        digest: str = image.spec()["files"][0]["sha256"]
        return digest

    h = dir_hash()
    (d / "__pycache__").mkdir()
    (d / "__pycache__" / "a.cpython-311.pyc").write_bytes(b"\0")
    (d / "sub" / "stray.pyc").write_bytes(b"\0")
    assert dir_hash() == h

    (d / "debug.log").write_text("noise")
    (d / "build").mkdir()
    (d / "build" / "out.txt").write_text("noise")
    assert dir_hash() != h
    assert dir_hash(["*.log", "build"]) == h

    (d / "sub" / "b.py").write_text("changed")
    assert dir_hash(["*.log", "build"]) != h


def test_dir_hash_covers_names_not_only_contents(tmp_path: Path) -> None:
    d = tmp_path / "d"
    d.mkdir()
    (d / "a.txt").write_text("x")

    def dir_hash() -> str:
        digest: str = Image.debian_slim("3.11").add_local_dir(d, "/d").spec()["files"][0]["sha256"]
        return digest

    h = dir_hash()
    (d / "a.txt").rename(d / "b.txt")
    assert dir_hash() != h


@pytest.mark.parametrize(
    "later",
    [
        lambda i: i.pip_install("six"),
        lambda i: i.uv_pip_install("six"),
        lambda i: i.run_commands("true"),
        lambda i: i.apt_install("curl"),
    ],
)
def test_build_step_after_mounted_files_is_refused(tmp_path: Path, later: object) -> None:
    image = Image.debian_slim("3.11").add_local_dir(tmp_path, "/src")
    with pytest.raises(InvalidError, match="copy=True"):
        later(image)  # type: ignore[operator]


def test_copy_after_mounted_files_is_refused(tmp_path: Path) -> None:
    f = tmp_path / "f.txt"
    f.write_text("x")
    image = Image.debian_slim("3.11").add_local_file(f, "/f.txt")
    with pytest.raises(InvalidError, match="copy=True"):
        image.add_local_dir(tmp_path, "/d", copy=True)


def test_env_and_workdir_after_mounted_files_are_fine(tmp_path: Path) -> None:
    image = Image.debian_slim("3.11").add_local_dir(tmp_path, "/src")
    image = image.env({"A": "1"}).workdir("/src").add_local_dir(tmp_path, "/again")
    assert [s["type"] for s in image.spec()["steps"]] == ["env", "workdir"]


def test_build_steps_after_copied_files_are_fine(tmp_path: Path) -> None:
    image = Image.debian_slim("3.11").add_local_dir(tmp_path, "/src", copy=True)
    assert image.pip_install("six").spec()["files"][0]["position"] == 0


def test_add_local_file_validation(tmp_path: Path) -> None:
    f = tmp_path / "f.txt"
    f.write_text("x")
    base = Image.debian_slim("3.11")
    with pytest.raises(InvalidError, match="not a file"):
        base.add_local_file(tmp_path / "missing.txt", "/f.txt")
    with pytest.raises(InvalidError, match="not a file"):
        base.add_local_file(tmp_path, "/f.txt")
    with pytest.raises(InvalidError, match="absolute"):
        base.add_local_file(f, "relative/f.txt")
    with pytest.raises(InvalidError, match=r"\.\."):
        base.add_local_file(f, "/a/../../etc/f.txt")
    with pytest.raises(InvalidError, match="not a directory"):
        base.add_local_dir(f, "/d")


def test_requirements_are_read_at_definition_time(tmp_path: Path) -> None:
    req = tmp_path / "requirements.txt"
    req.write_text("six\n")
    base = Image.debian_slim("3.11")
    image = base.uv_pip_install(requirements=[str(req)])
    step = image.spec()["steps"][0]
    assert step["requirements"] == [{"path": str(req.resolve()), "content": "six\n"}]
    h = image.content_hash()
    req.write_text("attrs\n")
    assert image.content_hash() == h
    assert base.uv_pip_install(requirements=[str(req)]).content_hash() != h
    with pytest.raises(InvalidError, match="requirements"):
        base.uv_pip_install(requirements=[str(tmp_path / "missing.txt")])


def test_add_local_python_source_resolves_packages_and_modules(on_sys_path: Path) -> None:
    pkg = on_sys_path / "ketch_test_srcpkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("X = 1\n")
    (pkg / "helper.py").write_text("Y = 2\n")
    (on_sys_path / "ketch_test_srcmod.py").write_text("Z = 3\n")

    spec = (
        Image.debian_slim("3.11")
        .add_local_python_source("ketch_test_srcpkg", "ketch_test_srcmod")
        .spec()
    )
    pkg_entry, mod_entry = spec["files"]
    assert pkg_entry["local_path"] == str(pkg.resolve())
    assert pkg_entry["remote_path"] == "/root/ketch_test_srcpkg"
    assert pkg_entry["kind"] == "dir"
    assert pkg_entry["python_module"] == "ketch_test_srcpkg"
    assert mod_entry["local_path"] == str((on_sys_path / "ketch_test_srcmod.py").resolve())
    assert mod_entry["remote_path"] == "/root/ketch_test_srcmod.py"
    assert mod_entry["kind"] == "file"
    assert pkg_entry["copy"] is mod_entry["copy"] is False


def test_add_local_python_source_copy_counts_in_hash(on_sys_path: Path) -> None:
    (on_sys_path / "ketch_test_srcmod2.py").write_text("Z = 3\n")
    base = Image.debian_slim("3.11")
    mounted = base.add_local_python_source("ketch_test_srcmod2")
    copied = base.add_local_python_source("ketch_test_srcmod2", copy=True)
    assert mounted.content_hash() == base.content_hash()
    assert copied.content_hash() != base.content_hash()


def test_add_local_python_source_unknown_module_is_named() -> None:
    with pytest.raises(InvalidError, match="ketch_no_such_module_zzz"):
        Image.debian_slim("3.11").add_local_python_source("ketch_no_such_module_zzz")
    with pytest.raises(InvalidError, match="not a module name"):
        Image.debian_slim("3.11").add_local_python_source("not-a-module")


def test_import_needs_only_the_stdlib() -> None:
    code = (
        "import sys, ketch, ketch.exception\n"
        "before = set(sys.modules)\n"
        "import ketch.image\n"
        "new = {m.split('.')[0] for m in set(sys.modules) - before}\n"
        "print(sorted(new - set(sys.stdlib_module_names) - {'ketch'}))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"
