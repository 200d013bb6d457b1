"""Containers on root-filesystem images (I1, I3): a function runs on the Debian layers its
image built (apt packages, RUN output, Dockerfile COPY/ENV/WORKDIR, files at absolute
paths), a second deploy builds nothing, a changed step rebuilds only what follows it, and a
container's writes to the image stay its own.

The layers live in the session's shared cache (KETCH_ROOTFS_CACHE); steps that must
really build carry a marker unique to the test.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import uuid
from pathlib import Path
from typing import Any

import pytest
from cli_support import ketch, ok, python, write

pytestmark = [
    pytest.mark.spec("I1"),
    pytest.mark.skipif(
        os.geteuid() != 0 or not (shutil.which("mmdebstrap") and shutil.which("bwrap")),
        reason="root-filesystem images need root, mmdebstrap and bwrap (scripts/setup)",
    ),
    # The first root-filesystem build of a session may make the Debian base (about 30 s).
    pytest.mark.timeout(400),
]

_PROBE = """
@app.function()
def probe(path: str) -> dict:
    import os, subprocess, sys

    def read(p):
        try:
            with open(p) as f:
                return f.read().strip()
        except OSError as exc:
            return type(exc).__name__

    jq = subprocess.run(["jq", "--version"], capture_output=True, text=True)
    return {
        "jq": jq.stdout.strip(),
        "marker": read("/opt/marker"),
        "second": read("/opt/second"),
        "debian": read("/etc/debian_version"),
        "python": sys.executable,
        "token": read(path),
    }
"""


def _call(home: Path, app: str, fn: str, *args: object) -> Any:
    code = (
        "import json, ketch\n"
        f"f = ketch.Function.from_name({app!r}, {fn!r})\n"
        f"print(json.dumps(f.remote(*{list(args)!r})))\n"
    )
    return json.loads(ok(python(home, code)).strip().splitlines()[-1])


def _layers(stderr: str) -> list[tuple[str, bool]]:
    """The layer lines of a build log: (step, cached?)."""
    found = re.findall(r"==> \[\d+/\d+\] (.*?)( \(cached\))?$", stderr, flags=re.M)
    return [(step, bool(cached)) for step, cached in found]


def _app(path: Path, name: str, image: str, body: str) -> Path:
    return write(path, f"import ketch\n\napp = ketch.App({name!r}, image={image})\n{body}")


def test_apt_and_run_commands_layers_run_and_are_cached(server: Any, tmp_path: Path) -> None:
    name = f"rootfs-{uuid.uuid4().hex[:8]}"
    tok = uuid.uuid4().hex[:12]
    image = (
        f'ketch.Image.debian_slim(python_version="3.11").apt_install("jq")'
        f'.run_commands("echo {tok} > /opt/marker").run_commands("echo {{}} > /opt/second")'
    )
    app_file = _app(tmp_path / "app.py", name, image.format("one"), _PROBE)
    first = ketch(server.home, "deploy", str(app_file), timeout=400)
    ok(first)
    built = _layers(first.stderr)
    assert [cached for _, cached in built][1:] == [False, False], first.stderr

    seen = _call(server.home, name, "probe", str(server.home / "token"))
    assert seen["jq"].startswith("jq-"), seen
    assert seen["marker"] == tok and seen["second"] == "one", seen
    assert seen["debian"][:2] == "12" and seen["python"] == "/usr/bin/python3", seen
    # The server's token is not in the image, nor shown into it (I3).
    assert seen["token"] == "FileNotFoundError", seen

    again = ketch(server.home, "deploy", str(app_file), timeout=400)
    ok(again)
    assert _layers(again.stderr) and all(c for _, c in _layers(again.stderr)), again.stderr

    # One step changed: the layers before it come from the cache, it is built anew.
    changed = ketch(server.home, "deploy", str(_app(app_file, name, image.format("two"), _PROBE)))
    ok(changed)
    assert [c for _, c in _layers(changed.stderr)] == [True, True, False], changed.stderr
    assert _call(server.home, name, "probe", "/nothing")["second"] == "two"


_SCRIBBLE = """
@app.function()
def scribble(name: str) -> dict:
    import os
    seen = {p: os.path.exists(p) for p in ("/usr/" + name, "/opt/marker.old")}
    with open("/usr/" + name, "w") as f:
        f.write("mine")
    os.replace("/opt/marker", "/opt/marker.old")
    return seen
"""


@pytest.mark.spec("I3")
def test_a_containers_writes_to_the_image_are_its_own(server: Any, tmp_path: Path) -> None:
    name = f"scribble-{uuid.uuid4().hex[:8]}"
    probe = f"ketch-probe-{uuid.uuid4().hex[:8]}"
    image = 'ketch.Image.debian_slim().run_commands("echo original > /opt/marker")'
    app_file = _app(tmp_path / "app.py", name, image, _SCRIBBLE)
    for _ in range(2):
        # Each deploy of a changed source replaces the containers: the second round runs
        # in a new container, on the same layers.
        ok(ketch(server.home, "deploy", str(app_file), timeout=400))
        seen = _call(server.home, name, "scribble", probe)
        assert seen == {f"/usr/{probe}": False, "/opt/marker.old": False}, seen
        app_file.write_text(app_file.read_text() + "\n# again\n")
    cache = Path(os.environ["KETCH_ROOTFS_CACHE"])
    assert not list(cache.glob(f"layers/*/diff/usr/{probe}"))
    assert not Path("/usr", probe).exists()


def test_dockerfile_copy_env_workdir_and_absolute_files(server: Any, tmp_path: Path) -> None:
    name = f"dockerfile-{uuid.uuid4().hex[:8]}"
    tok = uuid.uuid4().hex[:12]
    (tmp_path / "data.txt").write_text(f"copied {tok}\n")
    (tmp_path / "Dockerfile").write_text(
        "FROM debian:bookworm\n"
        "COPY data.txt /opt/data.txt\n"
        f"ENV GREETING=hello-{tok}\n"
        "WORKDIR /srv/work\n"
    )
    assets = tmp_path / "assets"
    assets.mkdir()
    (assets / "a.txt").write_text("asset a\n")
    (tmp_path / "mounted.txt").write_text("mounted\n")
    image = (
        f"ketch.Image.from_dockerfile({str(tmp_path / 'Dockerfile')!r})"
        f".add_local_dir({str(assets)!r}, '/assets', copy=True)"
        f".add_local_file({str(tmp_path / 'mounted.txt')!r}, '/root/mounted.txt')"
    )
    body = """
@app.function()
def look() -> dict:
    import os

    def read(p):
        try:
            with open(p) as f:
                return f.read().strip()
        except OSError as exc:
            return type(exc).__name__

    return {
        "data": read("/opt/data.txt"),
        "greeting": os.environ.get("GREETING"),
        "cwd": os.getcwd(),
        "asset": read("/assets/a.txt"),
        "mounted": read("/root/mounted.txt"),
        "bashrc": os.path.exists("/root/.bashrc"),
        "source": os.path.isfile("/root/app.py"),
        "module": __file__,
    }
"""
    ok(ketch(server.home, "deploy", str(_app(tmp_path / "app.py", name, image, body)), timeout=400))
    seen = _call(server.home, name, "look")
    assert seen["data"] == f"copied {tok}" and seen["greeting"] == f"hello-{tok}", seen
    assert seen["cwd"] == "/srv/work", seen
    assert seen["asset"] == "asset a" and seen["mounted"] == "mounted", seen
    # /root of the image shows through around the file placed in it, and the app's source
    # is there, where Modal puts it.
    assert seen["bashrc"] and seen["source"] and seen["module"] == "/root/app.py", seen
