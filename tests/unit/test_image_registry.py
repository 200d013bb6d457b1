"""Pure tests of Image.from_registry: its spec, how the builder plans it, where an added
Python comes from, how a pulled image's python3 is found, and pull errors in words."""

from __future__ import annotations

import os
import platform
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from ketch._images import python_dist, registry
from ketch._images.dockerfile import Copy, Env, Run
from ketch._images.rootfs import BaseSource, DirectoryBase
from ketch._images.steps import describe_step, plan
from ketch.exception import InvalidError
from ketch.image import Image
from ketch.secret import Secret

pytestmark = pytest.mark.spec("I2")

LOCAL = f"{sys.version_info.major}.{sys.version_info.minor}"
ARCH = platform.machine().lower()


def test_spec_records_the_reference_and_no_secret_values() -> None:
    image = Image.from_registry(
        "reg.example:5000/team/base:1", secret=Secret.from_name("creds", environment_name="dev")
    )
    assert image.python_version == LOCAL
    [step] = image.spec()["steps"]
    assert step == {
        "type": "from_registry",
        "ref": "reg.example:5000/team/base:1",
        "secret": "creds",
        "secret_environment": "dev",
        "add_python": None,
        "setup_dockerfile_commands": [],
    }
    assert describe_step(step) == 'from_registry("reg.example:5000/team/base:1")'


def test_add_python_sets_the_python_version() -> None:
    image = Image.from_registry("ubuntu:24.04", add_python="3.12")
    assert image.python_version == "3.12"
    step = image.spec()["steps"][0]
    assert describe_step(step) == 'from_registry("ubuntu:24.04", add_python="3.12")'
    assert image.content_hash() != Image.from_registry("ubuntu:24.04").content_hash()


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"tag": ""}, "tag must be an image name"),
        ({"tag": "a b"}, "tag must be an image name"),
        ({"tag": "x", "add_python": "3"}, 'add_python must look like "3.X"'),
        ({"tag": "x", "secret": Secret.from_dict({"A": "b"})}, "Secret.from_name"),
        ({"tag": "x", "setup_dockerfile_commands": "RUN x"}, "list of strings"),
        ({"tag": "x", "setup_dockerfile_commands": ["FROM y"]}, "FROM is not allowed"),
        ({"tag": "x", "setup_dockerfile_commands": ["HEALTHCHECK x"]}, "HEALTHCHECK"),
        ({"tag": "x", "force_build": "yes"}, "force_build must be a bool"),
    ],
)
def test_bad_arguments_are_refused_where_the_image_is_defined(
    kwargs: dict[str, Any], needle: str
) -> None:
    with pytest.raises(InvalidError, match=needle):
        Image.from_registry(**kwargs)


class FakeBase:
    """Stands in for a pulled image: planning never pulls."""

    def __init__(self, step: Mapping[str, Any]) -> None:
        self.step = dict(step)

    key = "k"
    description = "fake"
    config = DirectoryBase("k", Path("/"), "fake").config

    def cached(self, cache: Path) -> bool:
        return True

    async def ensure(self, cache: Path, log: registry.LogFn) -> Path:
        return Path("/")


def _plan(image: Image) -> tuple[FakeBase, list[Any]]:
    seen: list[FakeBase] = []

    def factory(step: Mapping[str, Any]) -> BaseSource:
        seen.append(FakeBase(step))
        return seen[-1]

    base, ops = plan(image.spec(), {"from_registry": factory})
    assert base is seen[0]
    return seen[0], ops


def test_plan_makes_the_pulled_image_the_base_and_pip_uses_its_python3() -> None:
    base, ops = _plan(Image.from_registry("r:1").pip_install("six").env({"A": "1"}))
    assert base.step["ref"] == "r:1" and base.step["python_version"] == LOCAL
    pip = ops[0].instruction
    assert isinstance(pip, Run) and pip.argv is not None
    assert pip.argv[pip.argv.index("--python") + 1] == "python3"
    assert isinstance(ops[1].instruction, Env)


def test_setup_commands_run_before_the_added_python(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dist = _fake_dist(tmp_path, "3.12.4")
    monkeypatch.setenv("UV_PYTHON_INSTALL_DIR", str(tmp_path))
    image = Image.from_registry(
        "r:1", add_python="3.12", setup_dockerfile_commands=["RUN apk add bash", "ENV B=2"]
    ).pip_install("six")
    _, ops = _plan(image)
    kinds = [type(op.instruction) for op in ops]
    assert kinds == [Run, Env, Copy, Run]
    assert ops[0].instruction.command == "apk add bash"
    copy = ops[2]
    assert copy.context == dist and copy.instruction.dest == "/usr/local/"
    pip = ops[3].instruction.argv
    assert pip[pip.index("--python") + 1] == "/usr/local/bin/python3.12"


def test_add_python_without_a_managed_interpreter_names_the_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("UV_PYTHON_INSTALL_DIR", str(tmp_path))
    with pytest.raises(InvalidError, match=r"`uv python install 3\.12`"):
        _plan(Image.from_registry("r:1", add_python="3.12"))


def test_a_server_without_registry_support_refuses_clearly() -> None:
    with pytest.raises(InvalidError, match="cannot pull images from registries"):
        plan(Image.from_registry("r:1").spec(), {})


def _fake_dist(where: Path, full: str, tag: str = "", arch: str = ARCH) -> Path:
    minor = full.rsplit(".", 1)[0]
    dist = where / f"cpython-{full}{tag}-linux-{arch}-gnu"
    (dist / "bin").mkdir(parents=True)
    (dist / "bin" / f"python{minor}").write_text("")
    (dist / "lib" / f"python{minor}").mkdir(parents=True)
    (dist / "lib" / f"python{minor}" / "os.py").write_text("")
    return dist


def test_find_standalone_takes_the_newest_plain_build(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fake_dist(tmp_path, "3.12.2")
    newest = _fake_dist(tmp_path, "3.12.10")
    _fake_dist(tmp_path, "3.12.11", tag="+freethreaded")
    _fake_dist(tmp_path, "3.12.12", arch="riscv64" if ARCH != "riscv64" else "s390x")
    broken = _fake_dist(tmp_path, "3.12.13")
    os.remove(broken / "lib" / "python3.12" / "os.py")
    _fake_dist(tmp_path, "3.13.1")
    assert python_dist.find_standalone("3.12", tmp_path) == newest
    assert python_dist.find_standalone("3.11", tmp_path) is None
    monkeypatch.setenv("UV_PYTHON_INSTALL_DIR", str(tmp_path))
    assert python_dist.uv_python_dir() == tmp_path
    assert python_dist.find_standalone("3.13") is not None


def test_find_python_follows_links_inside_the_image(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "usr" / "bin").mkdir(parents=True)
    (root / "opt" / "py" / "bin").mkdir(parents=True)
    (root / "opt" / "py" / "bin" / "python3.12").write_text("")
    # An absolute link means the image's /opt, never the host's.
    (root / "usr" / "bin" / "python3").symlink_to("/opt/py/bin/python3.12")
    assert registry.find_python(root, "/nowhere:/usr/bin") == ("/usr/bin/python3", "3.12")
    (root / "usr" / "bin" / "python3").unlink()
    (root / "usr" / "bin" / "python3").symlink_to("/missing")
    assert registry.find_python(root, "/usr/bin") is None


def test_find_python_reads_the_version_from_its_library(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "conda" / "bin").mkdir(parents=True)
    (root / "conda" / "bin" / "python3").write_text("")
    (root / "conda" / "lib" / "python3.10").mkdir(parents=True)
    (root / "conda" / "lib" / "python3.10" / "os.py").write_text("")
    assert registry.find_python(root, "/conda/bin") == ("/conda/bin/python3", "3.10")


@pytest.mark.parametrize(
    ("output", "needle"),
    [
        (
            'time="x" level=fatal msg="Error parsing image name: reading manifest 2 in '
            'r.example/a: manifest unknown"',
            "no image or tag r.example/a:2 in registry r.example",
        ),
        (
            'level=fatal msg="pinging container registry r.example: Get '
            '\\"https://r.example/v2/\\": dial tcp 127.0.0.1:1: connect: connection refused"',
            "cannot reach registry r.example",
        ),
        ("reading manifest: unauthorized: authentication required", "refused access"),
    ],
)
def test_skopeo_errors_become_one_line(output: str, needle: str) -> None:
    message = registry._one_line("r.example/a:2", output)
    assert needle in message and "\n" not in message


def test_registry_host_defaults_to_docker_hub() -> None:
    assert registry.registry_host("ubuntu:24.04") == "docker.io"
    assert registry.registry_host("library/ubuntu") == "docker.io"
    assert registry.registry_host("127.0.0.1:5000/seed:1") == "127.0.0.1:5000"
    assert registry.registry_host("ghcr.io/a/b") == "ghcr.io"
