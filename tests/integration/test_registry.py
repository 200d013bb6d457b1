"""Image.from_registry against a real local registry (Debian's docker-registry on
127.0.0.1), seeded with images made here from the session's Debian base with umoci."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cli_support import assert_clean_error, ketch, ok, python, unique_name, write

from ketch._images.rootfs import DebianBase, command_in_image
from ketch._server.images import BuiltImage, ImageBuilder, ImageBuildError
from ketch.exception import InvalidError
from ketch.image import Image
from ketch.secret import Secret
from supports import registry

pytestmark = [
    pytest.mark.spec("I2"),
    pytest.mark.skipif(
        os.geteuid() != 0
        or not registry.have_tools()
        or not (shutil.which("mmdebstrap") and shutil.which("bwrap")),
        reason="registry images need root, docker-registry, skopeo, umoci and bwrap",
    ),
    # The session's first test makes and pushes the seed images (about 20 s).
    pytest.mark.timeout(300),
]

USER, PASSWORD = "puller", f"pw-{uuid.uuid4().hex}"
PYTHON = "3.11"  # bookworm's, the seed images' base


class Log:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def __call__(self, line: str) -> None:
        self.lines.append(line)


@dataclass
class Seeded:
    open: registry.Registry
    private: registry.Registry
    source_root: Path
    rootfs: Path  # this module's root-filesystem cache (pulls and layers)

    @property
    def seed(self) -> str:
        return f"{self.open.host}/seed:1"

    @property
    def nopy(self) -> str:
        return f"{self.open.host}/seed:nopy"


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory, rootfs_cache: Path) -> Iterator[Seeded]:
    work = tmp_path_factory.mktemp("registry")
    source = asyncio.run(DebianBase("bookworm").ensure(rootfs_cache, lambda _: None))
    layout = registry.build_layout(source, work / "build")
    open_reg = registry.Registry(work / "open").start()
    private = registry.Registry(work / "private", {USER: PASSWORD})
    try:
        private.start()
        open_reg.push(layout, "full", "seed:1")
        open_reg.push(layout, "nopy", "seed:nopy")
        private.push(layout, "full", "seed:1")
        # Registry pulls are keyed by digest, new each session: kept out of the shared cache.
        yield Seeded(open_reg, private, source, work / "rootfs")
    finally:
        private.stop()
        open_reg.stop()


def make_builder(
    tmp_path: Path, seeded: Seeded, secrets: Mapping[str, Mapping[str, str]] | None = None
) -> ImageBuilder:
    def lookup(environment: str | None, name: str) -> Mapping[str, str]:
        assert secrets is not None and name in secrets, name
        return secrets[name]

    return ImageBuilder(tmp_path / "images", seeded.rootfs, secrets=lookup)


def build(builder: ImageBuilder, image: Image | dict[str, Any], log: Log) -> BuiltImage:
    spec = image.spec() if isinstance(image, Image) else image
    return asyncio.run(builder.build(spec, log))


def run_in(built: BuiltImage, script: str, scratch: Path) -> str:
    assert built.rootfs is not None
    cmd = command_in_image(built.rootfs, ["/bin/sh", "-c", script], scratch / uuid.uuid4().hex[:8])
    result = subprocess.run(
        cmd, cwd=built.rootfs.root, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr + result.stdout
    return result.stdout.strip()


def failure(builder: ImageBuilder, image: Image | dict[str, Any]) -> str:
    with pytest.raises((ImageBuildError, InvalidError)) as info:
        build(builder, image, Log())
    message = str(info.value)
    assert "\n" not in message, message
    return message


def test_pulled_image_is_the_base_and_runs(tmp_path: Path, seeded: Seeded) -> None:
    image = Image.from_registry(seeded.seed).run_commands("echo ok > /opt/m")
    assert image.python_version == PYTHON
    log = Log()
    built = build(make_builder(tmp_path, seeded), image, log)
    assert built.rootfs is not None
    assert any("pulling sha256:" in line for line in log.lines), log.lines
    assert str(built.python) == "/usr/bin/python3"
    assert built.env.get("SEEDED") == "1"  # the image's own configuration is kept
    script = "cat /opt/m; python3 -c 'import sys; print(sys.version[:4])'"
    assert run_in(built, script, tmp_path) == f"ok\n{PYTHON}"

    log = Log()
    again = build(make_builder(tmp_path / "other", seeded), image, log)
    assert again.rootfs == built.rootfs
    assert not any("pulling" in line for line in log.lines), log.lines
    assert any(line.endswith(" cached") and seeded.seed in line for line in log.lines)
    assert all(h.endswith("(cached)") for h in log.lines if h.startswith("==> [1/"))


def test_pip_install_goes_into_the_image_own_python(tmp_path: Path, seeded: Seeded) -> None:
    image = Image.from_registry(seeded.seed).pip_install("six")
    built = build(make_builder(tmp_path, seeded), image, Log())
    out = run_in(built, "python3 -c 'import six; print(six.__file__)'", tmp_path)
    assert out.startswith("/usr/local/lib/python3.11/dist-packages/six"), out


def test_wrong_tag_fails_in_one_line_naming_it(tmp_path: Path, seeded: Seeded) -> None:
    ref = f"{seeded.open.host}/seed:no-such-tag"
    message = failure(make_builder(tmp_path, seeded), Image.from_registry(ref))
    assert f"no image or tag {ref} in registry {seeded.open.host}" in message


def test_unreachable_registry_fails_in_one_line_naming_the_host(
    tmp_path: Path, seeded: Seeded
) -> None:
    host = f"127.0.0.1:{registry.free_port()}"  # nothing listens there
    message = failure(make_builder(tmp_path, seeded), Image.from_registry(f"{host}/seed:1"))
    assert f"cannot reach registry {host}" in message


def test_private_registry_needs_the_secret(tmp_path: Path, seeded: Seeded) -> None:
    ref = f"{seeded.private.host}/seed:1"
    creds = {"REGISTRY_USERNAME": USER, "REGISTRY_PASSWORD": PASSWORD}
    builder = make_builder(
        tmp_path, seeded, {"regcreds": creds, "wrong": {**creds, "REGISTRY_PASSWORD": "x"}}
    )
    message = failure(builder, Image.from_registry(ref))
    assert f"registry {seeded.private.host} refused access to {ref}" in message
    wrong = Image.from_registry(ref, secret=Secret.from_name("wrong"))
    assert "refused access" in failure(builder, wrong)

    log = Log()
    image = Image.from_registry(ref, secret=Secret.from_name("regcreds")).run_commands("true")
    built = build(builder, image, log)
    assert run_in(built, "python3 -c 'print(1)'", tmp_path) == "1"
    assert not any(PASSWORD in line for line in log.lines)


def test_image_without_python_is_refused_unless_added(tmp_path: Path, seeded: Seeded) -> None:
    message = failure(make_builder(tmp_path, seeded), Image.from_registry(seeded.nopy))
    assert f"{seeded.nopy} has no python3 on its PATH" in message
    assert f'add_python="{PYTHON}"' in message


def test_python_of_another_version_is_refused(tmp_path: Path, seeded: Seeded) -> None:
    spec = Image.from_registry(seeded.seed).spec()
    spec["python_version"] = "3.12"
    message = failure(make_builder(tmp_path, seeded), spec)
    assert f"{seeded.seed} has Python 3.11 (/usr/bin/python3)" in message
    assert 'add_python="3.12"' in message


def test_add_python_without_an_interpreter_names_what_to_install(
    tmp_path: Path, seeded: Seeded, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("UV_PYTHON_INSTALL_DIR", str(tmp_path / "none"))
    image = Image.from_registry(seeded.nopy, add_python="3.12")
    message = failure(make_builder(tmp_path, seeded), image)
    assert "no relocatable Python 3.12" in message
    assert "`uv python install 3.12`" in message


def test_add_python_copies_a_managed_interpreter_in(
    tmp_path: Path, seeded: Seeded, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry.fake_uv_python(seeded.source_root, tmp_path / "uv-python", PYTHON)
    monkeypatch.setenv("UV_PYTHON_INSTALL_DIR", str(tmp_path / "uv-python"))
    image = Image.from_registry(seeded.nopy, add_python=PYTHON).run_commands("echo ok > /opt/m")
    built = build(make_builder(tmp_path, seeded), image, Log())
    assert str(built.python) == f"/usr/local/bin/python{PYTHON}"
    script = (
        "cat /opt/m; ls /usr/bin/python3* 2>/dev/null; python3 -c 'import sys; print(sys.prefix)'"
    )
    assert run_in(built, script, tmp_path) == "ok\n/usr/local"


def test_dockerfile_from_a_registry_image(tmp_path: Path, seeded: Seeded) -> None:
    image = Image.debian_slim().dockerfile_commands(
        [f"FROM {seeded.seed}", "ENV GREETING=hi", 'RUN echo "$GREETING" > /opt/d']
    )
    built = build(make_builder(tmp_path, seeded), image, Log())
    assert run_in(built, "cat /opt/d; echo $SEEDED", tmp_path) == "hi\n1"


_PROBE = """
import ketch

app = ketch.App({name!r}, image={image})


@app.function()
def probe() -> dict:
    import os, sys

    with open("/opt/m") as f:
        marker = f.read().strip()
    return {{"m": marker, "python": sys.executable, "seeded": os.environ.get("SEEDED")}}
"""


def test_function_runs_on_a_private_registry_image(
    server: Any, tmp_path: Path, seeded: Seeded
) -> None:
    """Through the server: the secret's values reach the pull, the container runs on it."""
    secret, name = unique_name("regcreds"), unique_name("registry")
    creds = [f"REGISTRY_USERNAME={USER}", f"REGISTRY_PASSWORD={PASSWORD}"]
    ok(ketch(server.home, "secret", "create", secret, *creds))
    ref = f"{seeded.private.host}/seed:1"
    image = (
        f"ketch.Image.from_registry({ref!r}, secret=ketch.Secret.from_name({secret!r}))"
        '.run_commands("echo ok > /opt/m")'
    )
    app_file = write(tmp_path / "app.py", _PROBE.format(name=name, image=image))
    deployed = ketch(server.home, "deploy", str(app_file), timeout=280)
    ok(deployed)
    assert PASSWORD not in deployed.stdout + deployed.stderr
    code = f"import ketch\nprint(ketch.Function.from_name({name!r}, 'probe').remote())"
    out = ok(python(server.home, code)).strip().splitlines()[-1]
    assert out == str({"m": "ok", "python": "/usr/bin/python3", "seeded": "1"})

    missing = write(
        tmp_path / "bad.py", _PROBE.format(name=name, image=f"ketch.Image.from_registry({ref!r})")
    )
    bad = ketch(server.home, "deploy", str(missing), timeout=280)
    assert_clean_error(bad, f"refused access to {ref}")
