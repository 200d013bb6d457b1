"""Real root-filesystem builds: a Debian base, apt and RUN layers, Dockerfiles, caching.

The layers live in the session's shared cache (KETCH_ROOTFS_CACHE), which outlives the
run: steps that must really build carry a marker unique to this run.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest

from ketch._images.rootfs import command_in_image
from ketch._server.images import BuiltImage, ImageBuilder, ImageBuildError
from ketch.exception import InvalidError
from ketch.image import Image

pytestmark = [
    pytest.mark.spec("I1"),
    pytest.mark.skipif(
        os.geteuid() != 0 or not (shutil.which("mmdebstrap") and shutil.which("bwrap")),
        reason="root-filesystem builds need root, mmdebstrap and bwrap (scripts/setup)",
    ),
    # The first build of the session makes the Debian base (about 30 s).
    pytest.mark.timeout(300),
]

RUN_ID = uuid.uuid4().hex[:12]


class Log:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def __call__(self, line: str) -> None:
        self.lines.append(line)

    @property
    def heads(self) -> list[str]:
        return [line for line in self.lines if line.startswith("==> [")]


@pytest.fixture
def builder(tmp_path: Path, rootfs_cache: Path) -> ImageBuilder:
    return ImageBuilder(tmp_path / "images", rootfs_cache)


def build(
    builder: ImageBuilder, image: Image | dict[str, Any], log: Log | None = None
) -> BuiltImage:
    spec = image.spec() if isinstance(image, Image) else image
    return asyncio.run(builder.build(spec, log if log is not None else Log()))


def run_in(built: BuiltImage, script: str, scratch: Path) -> str:
    """Run a shell script in the built image, its writes going to a scratch layer."""
    assert built.rootfs is not None
    scratch = scratch / uuid.uuid4().hex[:8]
    cmd = command_in_image(built.rootfs, ["/bin/sh", "-c", script], scratch)
    result = subprocess.run(
        cmd, cwd=built.rootfs.root, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr + result.stdout
    return result.stdout.strip()


def layer_state(built: BuiltImage) -> list[tuple[Path, int]]:
    assert built.rootfs is not None
    return [(d, (d.parent / ".ok").stat().st_mtime_ns) for d in built.rootfs.layer_dirs[1:]]


JQ_IMAGE = Image.debian_slim("3.11").apt_install("jq").run_commands("echo built > /opt/marker")


def test_apt_and_run_layers_build_and_run(builder: ImageBuilder, tmp_path: Path) -> None:
    log = Log()
    built = build(builder, JQ_IMAGE, log)
    assert built.rootfs is not None
    assert built.hash == JQ_IMAGE.content_hash()
    assert log.lines[0].startswith("==> rootfs image: Debian bookworm base")
    assert [h.split("] ")[0] for h in log.heads] == ["==> [base", "==> [1/2", "==> [2/2"]
    assert "apt-get install -y --no-install-recommends jq" in log.heads[1]
    assert 'run_commands("echo built > /opt/marker")' in log.heads[2]
    assert len(built.rootfs.layer_dirs) == 3  # base, apt, run
    assert str(built.python) == "/usr/bin/python3"
    assert run_in(built, "jq --version", tmp_path).startswith("jq-1.")
    assert run_in(built, "cat /opt/marker", tmp_path) == "built"
    assert run_in(built, "python3 -c 'import sys; print(sys.version[:4])'", tmp_path) == "3.11"


def test_second_build_is_all_cached_and_builds_nothing(builder: ImageBuilder) -> None:
    first = build(builder, JQ_IMAGE)
    before = layer_state(first)
    log = Log()
    again = build(ImageBuilder(builder.cache_dir, builder.rootfs.cache), JQ_IMAGE, log)
    assert again == first
    assert log.heads and all(h.endswith("(cached)") for h in log.heads), log.lines
    assert len(log.lines) == len(log.heads) + 1  # the summary line, no step output
    assert layer_state(again) == before


def test_changing_a_step_rebuilds_only_that_layer(builder: ImageBuilder, tmp_path: Path) -> None:
    one = Image.debian_slim("3.11").apt_install("jq").run_commands(f"echo one-{RUN_ID} > /m")
    two = Image.debian_slim("3.11").apt_install("jq").run_commands(f"echo two-{RUN_ID} > /m")
    first = build(builder, one)
    log = Log()
    second = build(builder, two, log)
    assert first.rootfs is not None and second.rootfs is not None
    assert log.heads[1].endswith("(cached)")  # apt_install, shared
    assert not log.heads[2].endswith("(cached)")
    assert second.rootfs.layers[:2] == first.rootfs.layers[:2]
    assert second.rootfs.layers[2] != first.rootfs.layers[2]
    assert run_in(second, "cat /m", tmp_path) == f"two-{RUN_ID}"
    assert run_in(first, "cat /m", tmp_path) == f"one-{RUN_ID}"


def test_deletes_are_whiteouts_and_containers_never_write_the_layers(
    builder: ImageBuilder, tmp_path: Path
) -> None:
    image = Image.debian_slim("3.11").run_commands(
        f"echo {RUN_ID} > /opt/kept && echo x > /opt/gone", "rm /opt/gone"
    )
    built = build(builder, image)
    assert run_in(built, "cat /opt/kept; ls /opt", tmp_path) == f"{RUN_ID}\nkept"
    run_in(built, "rm /opt/kept && echo new > /opt/new", tmp_path)
    assert run_in(built, "ls /opt", tmp_path) == "kept"


def test_pip_install_goes_into_the_image_python(builder: ImageBuilder, tmp_path: Path) -> None:
    image = Image.debian_slim("3.11").apt_install("jq").pip_install("six")
    log = Log()
    built = build(builder, image, log)
    assert "pip_install" in log.heads[-1]
    out = run_in(built, "python3 -c 'import six; print(six.__file__)'", tmp_path)
    assert out.startswith("/usr/local/lib/python3.11/dist-packages/")


def write_context(root: Path, payload: str) -> Path:
    (root / "data").mkdir(parents=True, exist_ok=True)
    (root / "data" / "payload.txt").write_text(payload)
    dockerfile = root / "Dockerfile"
    dockerfile.write_text(
        "FROM debian:bookworm\n"
        "ARG GREETING=hello\n"
        "ENV APP_HOME=/srv/app MODE=test\n"
        "WORKDIR $APP_HOME\n"
        "COPY data/payload.txt ./in/\n"
        'RUN echo "$GREETING from $(pwd)" > made.txt\n'
        'CMD ["python3", "-V"]\n'
    )
    return dockerfile


def test_from_dockerfile_copies_sets_env_and_workdir(builder: ImageBuilder, tmp_path: Path) -> None:
    dockerfile = write_context(tmp_path / "ctx", f"payload {RUN_ID}\n")
    image = Image.from_dockerfile(dockerfile)
    built = build(builder, image)
    assert built.rootfs is not None
    assert built.env["APP_HOME"] == "/srv/app" and built.env["MODE"] == "test"
    assert built.workdir == "/srv/app"
    assert built.rootfs.config.cmd == ("python3", "-V")
    out = run_in(built, "pwd; cat /srv/app/in/payload.txt made.txt; echo $MODE", tmp_path)
    assert out == f"/srv/app\npayload {RUN_ID}\nhello from /srv/app\ntest"
    # The copied file is owned by root, as Docker's COPY leaves it.
    assert run_in(built, "stat -c %U:%G in/payload.txt", tmp_path) == "root:root"


def test_a_changed_copied_file_rebuilds_from_its_copy(
    builder: ImageBuilder, tmp_path: Path
) -> None:
    dockerfile = write_context(tmp_path / "ctx", f"first {RUN_ID}\n")
    first_image = Image.from_dockerfile(dockerfile)
    first = build(builder, first_image)
    (tmp_path / "ctx" / "data" / "payload.txt").write_text(f"second {RUN_ID}\n")
    # An image defined before the change is refused rather than built from other content.
    with pytest.raises(InvalidError, match="changed after the image was defined"):
        build(builder, first_image)
    second_image = Image.from_dockerfile(dockerfile)
    assert second_image.content_hash() != first_image.content_hash()
    log = Log()
    second = build(builder, second_image, log)
    copy_head = next(h for h in log.heads if "COPY" in h)
    assert "line 5" in copy_head and not copy_head.endswith("(cached)")
    assert run_in(second, "cat in/payload.txt", tmp_path) == f"second {RUN_ID}"
    assert first.rootfs is not None and second.rootfs is not None
    assert first.rootfs.layers[0] == second.rootfs.layers[0]


def test_add_local_file_copy_true_becomes_a_layer(builder: ImageBuilder, tmp_path: Path) -> None:
    f = tmp_path / "conf.ini"
    f.write_text(f"[run]\nid = {RUN_ID}\n")
    image = Image.debian_slim("3.11").run_commands("true").add_local_file(f, "/etc/app/", copy=True)
    built = build(builder, image)
    assert run_in(built, "cat /etc/app/conf.ini", tmp_path) == f"[run]\nid = {RUN_ID}"


def test_a_failing_run_names_its_instruction_and_shows_its_tail(
    builder: ImageBuilder, rootfs_cache: Path
) -> None:
    image = Image.debian_slim("3.11").run_commands(f"echo about to fail {RUN_ID}; exit 3")
    with pytest.raises(ImageBuildError) as info:
        build(builder, image)
    err = info.value
    assert f"RUN echo about to fail {RUN_ID}; exit 3" in err.step
    assert "run_commands(" in err.step
    assert f"about to fail {RUN_ID}" in err.log_tail
    assert "exit status 3" in str(err)
    assert not list((rootfs_cache / "layers").glob(".tmp-*"))


def test_a_failing_dockerfile_run_names_its_line(builder: ImageBuilder, tmp_path: Path) -> None:
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text(f"FROM debian:bookworm\nENV A=1\nRUN echo {RUN_ID} && false\n")
    with pytest.raises(ImageBuildError, match=rf"RUN echo {RUN_ID} && false \(.*line 3\)"):
        build(builder, Image.from_dockerfile(dockerfile))


def test_unknown_instructions_are_refused_by_name(builder: ImageBuilder, tmp_path: Path) -> None:
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text("FROM debian:bookworm\nHEALTHCHECK CMD true\n")
    with pytest.raises(InvalidError, match="line 2: HEALTHCHECK is not supported"):
        Image.from_dockerfile(dockerfile)
    # The server parses again and refuses the same, whatever a client sends.
    spec = Image.debian_slim("3.11").spec()
    spec["steps"] = [
        {
            "type": "dockerfile_commands",
            "commands": ["RUN true", "HEALTHCHECK CMD true"],
            "context_dir": None,
            "context_sha256": None,
            "build_args": {},
            "dockerfile": None,
        }
    ]
    log = Log()
    with pytest.raises(InvalidError, match="HEALTHCHECK is not supported"):
        build(builder, spec, log)
    assert log.lines == []


def test_a_python_debian_does_not_ship_needs_one_on_the_server(
    builder: ImageBuilder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No uv-managed interpreters at all: the refusal names what to install, and nothing runs.
    monkeypatch.setenv("UV_PYTHON_INSTALL_DIR", str(tmp_path / "no-pythons"))
    log = Log()
    with pytest.raises(
        InvalidError, match=r'debian_slim\(python_version="3\.12"\): .*`uv python install 3\.12`'
    ):
        build(builder, Image.debian_slim("3.12").apt_install("jq"), log)
    assert log.lines == []


def test_without_the_tools_rootfs_images_are_refused(
    builder: ImageBuilder, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_which = shutil.which
    monkeypatch.setattr(
        shutil, "which", lambda name: None if name in ("mmdebstrap", "bwrap") else real_which(name)
    )
    log = Log()
    with pytest.raises(InvalidError, match=r"apt-get install mmdebstrap bubblewrap") as info:
        build(builder, JQ_IMAGE, log)
    assert 'apt_install("jq")' in str(info.value)
    assert log.lines == []


def test_copy_and_add_details(builder: ImageBuilder, tmp_path: Path) -> None:
    import tarfile

    ctx = tmp_path / "ctx"
    (ctx / "tree" / "sub").mkdir(parents=True)
    (ctx / "tool.sh").write_text(f"#!/bin/sh\necho tool {RUN_ID}\n")
    (ctx / "tree" / "sub" / "f.txt").write_text("f")
    with tarfile.open(ctx / "bundle.tar.gz", "w:gz") as tar:
        tar.add(ctx / "tree", arcname="bundle")
    image = Image.debian_slim("3.11").dockerfile_commands(
        # An existing directory as the destination: the file goes in under its own name.
        "COPY tool.sh /usr/local/bin",
        # /bin is a symlink (merged /usr): it must stay one.
        "COPY --chmod=755 tool.sh /bin/tool",
        "COPY --chown=nobody:nogroup tree /opt/tree/",
        "ADD bundle.tar.gz /opt/unpacked/",
        context_dir=ctx,
    )
    built = build(builder, image)
    assert run_in(built, "cat /usr/local/bin/tool.sh | tail -1", tmp_path) == f"echo tool {RUN_ID}"
    assert run_in(built, "readlink /bin; tool", tmp_path) == f"usr/bin\ntool {RUN_ID}"
    owners = run_in(built, "stat -c '%U:%G %n' /opt/tree/sub /opt/tree/sub/f.txt", tmp_path)
    assert owners == "nobody:nogroup /opt/tree/sub\nnobody:nogroup /opt/tree/sub/f.txt"
    assert run_in(built, "cat /opt/unpacked/bundle/sub/f.txt", tmp_path) == "f"


def test_user_applies_to_later_run_steps(builder: ImageBuilder, tmp_path: Path) -> None:
    image = Image.debian_slim("3.11").dockerfile_commands(
        "USER nobody", f"RUN echo {RUN_ID} > /tmp/x && id -un && test ! -w /etc"
    )
    log = Log()
    built = build(builder, image, log)
    assert "nobody" in log.lines
    assert built.rootfs is not None and built.rootfs.config.user == "nobody"


def test_tmp_written_by_a_run_is_in_the_layer_and_inputs_are_not(
    builder: ImageBuilder, tmp_path: Path
) -> None:
    (tmp_path / "req.txt").write_text("six\n")
    image = (
        Image.debian_slim("3.11")
        .run_commands(f"echo {RUN_ID} > /tmp/handoff")
        .uv_pip_install(requirements=[str(tmp_path / "req.txt")])
        .run_commands("cat /tmp/handoff > /opt/got")
        .add_local_file(tmp_path / "req.txt", "/opt/req.txt", copy=True)
    )
    built = build(builder, image)
    assert built.rootfs is not None
    assert run_in(built, "cat /opt/got /opt/req.txt", tmp_path) == f"{RUN_ID}\nsix"
    for layer in built.rootfs.layer_dirs[1:]:
        assert not (layer / "tmp" / ".ketch").exists(), layer


def test_two_builders_of_one_layer_do_not_race(builder: ImageBuilder, tmp_path: Path) -> None:
    image = Image.debian_slim("3.11").run_commands(f"sleep 0.5; echo {RUN_ID} >> /opt/once")
    other = ImageBuilder(tmp_path / "other-images", builder.rootfs.cache)
    logs = [Log(), Log()]

    async def both() -> list[BuiltImage]:
        spec = image.spec()
        return list(await asyncio.gather(builder.build(spec, logs[0]), other.build(spec, logs[1])))

    first, second = asyncio.run(both())
    assert first.rootfs is not None and second.rootfs is not None
    assert first.rootfs.layers == second.rootfs.layers
    assert sorted(log.heads[-1].endswith("(cached)") for log in logs) == [False, True]
    assert run_in(first, "cat /opt/once", tmp_path) == RUN_ID
