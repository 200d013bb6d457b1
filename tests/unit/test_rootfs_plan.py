"""Root-filesystem images without building: SDK steps, the spec's contract, COPY rules and
the ops the builder would run."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from ketch._images.context import resolve_copy
from ketch._images.dockerfile import Copy, Env, Run, Workdir
from ketch._images.rootfs import DebianBase, DirectoryBase, ImageConfig, fold
from ketch._images.steps import debian_suite, needs_rootfs, plan
from ketch._utils.protocol.spec import ImageSpec
from ketch.exception import InvalidError
from ketch.image import Image

pytestmark = pytest.mark.spec("I1")


def context(tmp_path: Path) -> Path:
    (tmp_path / "src" / "pkg").mkdir(parents=True, exist_ok=True)
    (tmp_path / "src" / "pkg" / "mod.py").write_text("x = 1\n")
    (tmp_path / "src" / ".hidden").write_text("h")
    (tmp_path / "a.txt").write_text("a")
    (tmp_path / "b.txt").write_text("b")
    return tmp_path


def copy(
    text: str, tmp_path: Path, workdir: str | None = None
) -> tuple[str, list[str], str | None]:
    sources, dest = text.split()[:-1], text.split()[-1]
    resolved = resolve_copy(
        Copy(sources=tuple(sources), dest=dest), context(tmp_path), workdir, "Dockerfile"
    )
    return resolved.dest_dir, [e.rel for e in resolved.entries], resolved.rename


def test_copy_follows_dockers_rules(tmp_path: Path) -> None:
    # One file to a path is renamed there (unless the image has a directory there).
    assert copy("a.txt /opt/x.txt", tmp_path) == ("/opt", ["a.txt"], "x.txt")
    assert copy("a.txt /opt/", tmp_path) == ("/opt", ["a.txt"], None)
    assert copy("a.txt b.txt /opt/", tmp_path) == ("/opt", ["a.txt", "b.txt"], None)
    assert copy("*.txt /opt/", tmp_path) == ("/opt", ["a.txt", "b.txt"], None)
    # A directory's contents, hidden files included; relative to WORKDIR.
    assert copy("src app", tmp_path, "/srv") == (
        "/srv/app",
        [".hidden", "pkg", "pkg/mod.py"],
        None,
    )
    assert copy("/a.txt .", tmp_path, "/w") == ("/w", ["a.txt"], None)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("../outside /x", "outside the build context"),
        ("missing.txt /x", "not found"),
        ("*.nothing /x/", "matches no files"),
        ("a.txt b.txt /opt", "ending in /"),
    ],
)
def test_copy_refusals(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(InvalidError, match=message):
        copy(text, tmp_path)


def test_copy_through_a_symlink_out_of_the_context_is_refused(tmp_path: Path) -> None:
    ctx = context(tmp_path / "ctx")
    (tmp_path / "secret").write_text("s")
    os.symlink(tmp_path / "secret", ctx / "link")
    with pytest.raises(InvalidError, match="outside the build context"):
        resolve_copy(Copy(sources=("link",), dest="/x"), ctx, None, "Dockerfile")


def test_dockerfile_steps_are_hashed_with_what_they_copy(tmp_path: Path) -> None:
    ctx = context(tmp_path)
    (ctx / "Dockerfile").write_text("FROM debian:bookworm\nCOPY a.txt /a.txt\nRUN true\n")
    first = Image.from_dockerfile(ctx / "Dockerfile")
    assert first.python_version == "3.11"
    assert first.content_hash() == Image.from_dockerfile(ctx / "Dockerfile").content_hash()
    (ctx / "b.txt").write_text("not copied, no change")
    assert first.content_hash() == Image.from_dockerfile(ctx / "Dockerfile").content_hash()
    (ctx / "a.txt").write_text("changed")
    assert first.content_hash() != Image.from_dockerfile(ctx / "Dockerfile").content_hash()
    (ctx / "a.txt").chmod(0o700)
    step = Image.from_dockerfile(ctx / "Dockerfile").spec()["steps"][0]
    assert step["context_dir"] == str(ctx)
    assert step["dockerfile"] == str(ctx / "Dockerfile")


def test_dockerfile_commands_without_copies_do_not_depend_on_where(tmp_path: Path) -> None:
    image = Image.debian_slim("3.11").dockerfile_commands(["ENV A=1", "RUN echo $A"])
    step = image.spec()["steps"][0]
    assert step == {
        "type": "dockerfile_commands",
        "commands": ["ENV A=1", "RUN echo $A"],
        "context_dir": None,
        "context_sha256": None,
        "build_args": {},
        "dockerfile": None,
    }
    assert needs_rootfs(image.spec())


def test_sdk_refuses_unsupported_instructions_where_the_image_is_defined(tmp_path: Path) -> None:
    with pytest.raises(InvalidError, match="dockerfile_commands line 2: EXPOSE is not supported"):
        Image.debian_slim("3.11").dockerfile_commands("RUN true", "EXPOSE 80")
    with pytest.raises(InvalidError, match="FROM must be the first step"):
        Image.debian_slim("3.11").apt_install("jq").dockerfile_commands("FROM debian:bookworm")
    with pytest.raises(InvalidError, match="copy=True"):
        Image.debian_slim("3.11").add_local_dir(tmp_path, "/d").dockerfile_commands("RUN true")


def test_spec_with_rootfs_steps_passes_the_wire_contract(tmp_path: Path) -> None:
    ctx = context(tmp_path)
    image = (
        Image.debian_slim("3.11")
        .apt_install("jq")
        .run_commands("echo hi")
        .dockerfile_commands("COPY a.txt /a", context_dir=ctx, build_args={"V": "1"})
    )
    spec = image.spec()
    decoded = ImageSpec.model_validate(spec)
    dumped = decoded.model_dump(mode="json", by_alias=True, exclude_unset=True)
    assert dumped == spec


def ops_of(image: Image | dict[str, Any]) -> list[Any]:
    spec = image.spec() if isinstance(image, Image) else image
    return [op.instruction for op in plan(spec)[1]]


def test_sdk_steps_become_dockerfile_instructions(tmp_path: Path) -> None:
    f = tmp_path / "conf"
    f.write_text("c")
    image = (
        Image.debian_slim("3.11")
        .apt_install("jq", "curl")
        .run_commands("echo 1", "echo 2")
        .env({"A": "1"})
        .workdir("/app")
        .add_local_file(f, "/etc/conf", copy=True)
        .pip_install("six")
    )
    base, ops = plan(image.spec())
    assert base == DebianBase("bookworm")
    kinds = [type(op.instruction) for op in ops]
    assert kinds == [Run, Run, Run, Env, Workdir, Copy, Run]
    apt = ops[0].instruction
    assert isinstance(apt, Run) and apt.command is not None
    assert "apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y" in apt.command
    assert "--no-install-recommends jq curl" in apt.command
    assert ops[5].plan is not None and ops[5].plan.dest_dir == "/etc"
    pip = ops[6]
    assert pip.uv and isinstance(pip.instruction, Run) and pip.instruction.argv is not None
    assert "--system" in pip.instruction.argv and pip.instruction.argv[-1] == "six"


def test_from_picks_the_debian_base_and_checks_python() -> None:
    assert debian_suite("debian:bookworm-slim") == "bookworm"
    assert debian_suite("docker.io/library/debian:13") == "trixie"
    assert debian_suite("python:3.11") is None
    image = Image.debian_slim("3.13").dockerfile_commands("FROM debian:trixie", "RUN true")
    assert plan(image.spec())[0] == DebianBase("trixie")
    with pytest.raises(InvalidError, match=r"FROM debian:trixie has Python 3\.13"):
        plan(Image.debian_slim("3.11").dockerfile_commands("FROM debian:trixie").spec())
    with pytest.raises(InvalidError, match=r"FROM python:3\.11 is not supported.*from_registry"):
        plan(Image.debian_slim("3.11").dockerfile_commands("FROM python:3.11").spec())


def test_registry_bases_come_in_through_a_hook(tmp_path: Path) -> None:
    seen: list[Any] = []

    def factory(step: Any) -> DirectoryBase:
        seen.append(dict(step))
        return DirectoryBase("k" * 64, tmp_path, "unpacked python:3.11")

    spec = Image.debian_slim("3.11").dockerfile_commands("FROM python:3.11", "RUN true").spec()
    base, ops = plan(spec, {"from_registry": factory})
    assert isinstance(base, DirectoryBase)
    assert seen == [{"type": "from_registry", "ref": "python:3.11", "python_version": "3.11"}]
    assert len(ops) == 1


def test_configuration_folds_like_docker() -> None:
    args: dict[str, str] = {}
    config = ImageConfig()
    for instr in ops_of(
        Image.debian_slim("3.11").dockerfile_commands(
            "ARG V=1",
            "ENV PATH=/opt/bin:$PATH",
            "WORKDIR /a",
            "WORKDIR b",
            "USER app",
            'SHELL ["/bin/bash", "-c"]',
            "ENTRYPOINT python3",
            'CMD ["-V"]',
        )
    ):
        config = fold(config, args, instr)
    assert args == {"V": "1"}
    assert config.env["PATH"].startswith("/opt/bin:/usr/local/sbin:")
    assert config.workdir == "/a/b" and config.user == "app"
    assert config.shell == ("/bin/bash", "-c")
    assert config.entrypoint == ("/bin/bash", "-c", "python3") and config.cmd == ("-V",)


def test_a_python_debian_lacks_is_added_from_a_uv_managed_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import platform

    dist = tmp_path / f"cpython-3.12.4-linux-{platform.machine().lower()}-gnu"
    (dist / "bin").mkdir(parents=True)
    (dist / "bin" / "python3.12").write_text("")
    (dist / "lib" / "python3.12").mkdir(parents=True)
    (dist / "lib" / "python3.12" / "os.py").write_text("")
    monkeypatch.setenv("UV_PYTHON_INSTALL_DIR", str(tmp_path))
    spec = Image.debian_slim("3.12").apt_install("jq").pip_install("six").spec()
    base, ops = plan(spec)
    assert isinstance(base, DebianBase) and base.suite == "bookworm"
    assert base.python == "/usr/local/bin/python3.12"
    # The interpreter goes in first, from the uv-managed install; pip installs into it.
    first = ops[0].instruction
    assert isinstance(first, Copy) and first.dest == "/usr/local/" and ops[0].context == dist
    pip = ops[-1].instruction
    assert isinstance(pip, Run) and pip.argv is not None
    assert "/usr/local/bin/python3.12" in pip.argv
    # Debian's own Python needs nothing added.
    base11, ops11 = plan(Image.debian_slim("3.11").apt_install("jq").spec())
    assert isinstance(base11, DebianBase) and base11.python == "/usr/bin/python3"
    assert not any(isinstance(op.instruction, Copy) for op in ops11)
