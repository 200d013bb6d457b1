"""`ketch image list | rm | prune`, `--force-build` and interpreter discovery, through the
real CLI against a server of the test's own, with real builds."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from cli_support import assert_clean_error, ketch, ok, write

from ketch._server.images import ImageBuilder
from ketch.image import Image, hash_build_spec

pytestmark = pytest.mark.spec("A9")

VENV_APP = """
    import ketch

    app = ketch.App("{name}")
    image = ketch.Image.debian_slim().env({{"MARK": "{mark}"}})


    @app.function(image=image)
    def f(x):
        return x
"""

ROOTFS_APP = """
    import ketch

    app = ketch.App("{name}")
    image = ketch.Image.debian_slim().run_commands("echo {mark} > /opt/mark")


    @app.function(image=image)
    def f(x):
        return x
"""


def venv_app(tmp_path: Path, mark: str | None = None) -> tuple[Path, str, str]:
    """An app whose image is its own (an env step no other test has): its file, app name
    and image hash."""
    mark = mark or uuid.uuid4().hex
    name = f"img-{mark[:10]}"
    path = write(tmp_path / f"{name}.py", VENV_APP.format(name=name, mark=mark))
    return path, name, hash_build_spec(Image.debian_slim().env({"MARK": mark}).spec())


def images(home: Path) -> dict[str, dict[str, Any]]:
    data = json.loads(ok(ketch(home, "image", "list", "--json")))
    return {row["hash"]: row for row in data["images"]}


def test_list_rm_and_prune(fresh_server: Any, tmp_path: Path) -> None:
    home = fresh_server.home
    a_file, a_name, a_hash = venv_app(tmp_path)
    b_file, b_name, b_hash = venv_app(tmp_path)
    ok(ketch(home, "deploy", str(a_file)))
    ok(ketch(home, "deploy", str(b_file)))

    rows = images(home)
    assert rows[a_hash]["kind"] == "venv" and rows[a_hash]["size"] > 0
    assert [(u["app"], u["function"]) for u in rows[a_hash]["used_by"]] == [(a_name, "f")]
    table = ok(ketch(home, "image", "list"))
    assert a_hash[:12] in table and a_name in table and "on disk" in table

    # In use: refused without --force, naming who uses it.
    assert_clean_error(ketch(home, "image", "rm", a_hash[:8]), "is used by", f"{a_name}::f")
    assert_clean_error(ketch(home, "image", "rm", "ffffffff0000"), "no image's hash starts with")
    assert_clean_error(ketch(home, "image", "rm", "zz"), "is not an image hash prefix")
    assert (home / "images" / a_hash).is_dir()

    # B stopped: prune removes its image only; a dry run first removes nothing.
    ok(ketch(home, "app", "stop", b_name))
    dry = ok(ketch(home, "image", "prune", "--dry-run"))
    assert f"would remove venv image {b_hash[:12]}" in dry and a_hash[:12] not in dry
    assert (home / "images" / b_hash).is_dir()
    out = ok(ketch(home, "image", "prune"))
    assert f"removed venv image {b_hash[:12]}" in out and "Freed" in out
    assert not (home / "images" / b_hash).exists()
    assert set(images(home)) == {a_hash}

    ok(ketch(home, "image", "rm", a_hash[:8], "--force"))
    assert not (home / "images" / a_hash).exists()

    # Management routes: the server token only.
    info = json.loads((home / "server.json").read_text())
    url = f"http://127.0.0.1:{info['api_port']}/v1/images"
    assert httpx.get(url).status_code == 401
    assert httpx.post(url + "/prune", headers={"Authorization": "Bearer nope"}).status_code == 401


def _deploy_log(home: Path, path: Path, *flags: str) -> str:
    proc = ketch(home, "deploy", str(path), *flags)
    ok(proc)
    return proc.stderr


def test_force_build_rebuilds_a_cached_venv_image(
    fresh_server: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = fresh_server.home
    path, _, image_hash = venv_app(tmp_path)
    assert "==> venv image" in _deploy_log(home, path)
    marker = home / "images" / image_hash / ".ok"
    first = marker.stat().st_ino
    assert "==> venv image" not in _deploy_log(home, path)  # cached
    assert marker.stat().st_ino == first
    assert "==> venv image" in _deploy_log(home, path, "--force-build")
    assert marker.stat().st_ino != first
    # `ketch run` shows no build log; the image directory tells that it was built again.
    before = marker.stat().st_ino
    assert ok(ketch(home, "run", "--force-build", f"{path}::f", "--x", "7")).strip() == "7"
    assert marker.stat().st_ino != before
    for var in ("KETCH_FORCE_BUILD", "MODAL_FORCE_BUILD"):
        with monkeypatch.context() as m:
            m.setenv(var, "1")
            assert "==> venv image" in _deploy_log(home, path), var


def test_force_build_builds_an_image_two_functions_share_once(
    fresh_server: Any, tmp_path: Path
) -> None:
    mark = uuid.uuid4().hex
    text = VENV_APP.format(name=f"img2-{mark[:10]}", mark=mark)
    text += "\n\n    @app.function(image=image)\n    def g(x):\n        return x\n"
    path = write(tmp_path / "two.py", text)
    _deploy_log(fresh_server.home, path)
    forced = _deploy_log(fresh_server.home, path, "--force-build")
    assert forced.count("==> venv image") == 1, forced


needs_rootfs = pytest.mark.skipif(
    os.geteuid() != 0 or not all(shutil.which(t) for t in ("mmdebstrap", "bwrap")),
    reason="root-filesystem images need root and mmdebstrap + bubblewrap",
)


@needs_rootfs
def test_force_build_and_prune_of_rootfs_layers(
    fresh_server: Any, tmp_path: Path, rootfs_cache: Path
) -> None:
    home = fresh_server.home
    mark = uuid.uuid4().hex
    name = f"rfs-{mark[:10]}"
    path = write(tmp_path / f"{name}.py", ROOTFS_APP.format(name=name, mark=mark))
    first = _deploy_log(home, path)
    step = f"RUN echo {mark} > /opt/mark"
    built = [ln for ln in first.splitlines() if step in ln]
    assert built and "(cached)" not in built[0]
    again = [ln for ln in _deploy_log(home, path).splitlines() if step in ln]
    assert again and again[0].endswith("(cached)")
    forced = _deploy_log(home, path, "--force-build")
    assert [ln for ln in forced.splitlines() if step in ln and "(cached)" not in ln]
    # The base is FROM's: kept, as `docker build --no-cache` keeps its base image.
    assert any("[base]" in ln and ln.endswith("(cached)") for ln in forced.splitlines())

    rows = [r for r in images(home).values() if r["kind"] == "rootfs"]
    assert len(rows) == 1 and rows[0]["layers"] == 2 and rows[0]["used_by"]
    record = json.loads((home / "images" / rows[0]["hash"] / "rootfs.json").read_text())
    layer = rootfs_cache / Path(record["layers"][-1]).parent
    assert (layer / ".ok").is_file()

    ok(ketch(home, "app", "stop", name))
    out = ok(ketch(home, "image", "prune"))
    assert f"removed {layer.relative_to(rootfs_cache)}" in out
    assert not layer.exists()
    assert (rootfs_cache / Path(record["layers"][0]).parent / ".ok").is_file()  # base kept


def _pyenv(version: str) -> Path | None:
    root = Path(os.environ.get("PYENV_ROOT") or Path.home() / ".pyenv") / "versions"
    found = sorted(root.glob(f"{version}.*/bin/python{version}")) if root.is_dir() else []
    return found[-1] if found else None


def test_an_installed_but_unselected_pyenv_python_builds_a_venv_image(tmp_path: Path) -> None:
    interpreter = _pyenv("3.12")
    if interpreter is None:
        pytest.skip("no pyenv Python 3.12 here (~/.pyenv/versions/3.12.*): `pyenv install 3.12`")
    builder = ImageBuilder(tmp_path / "images")
    lines: list[str] = []
    built = asyncio.run(
        builder.build(Image.debian_slim(python_version="3.12").spec(), lines.append)
    )
    out = subprocess.run(
        [str(built.python), "-c", "import sys; print(sys.version_info[:2])"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert out.stdout.strip() == "(3, 12)"
