"""Real builds with uv: caching, package installs, failures, refusals and mounted files."""

from __future__ import annotations

import asyncio
import importlib.metadata
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from ketch._server.images import BuiltImage, ImageBuilder, ImageBuildError, mount_files
from ketch.exception import InvalidError
from ketch.image import Image

pytestmark = pytest.mark.spec("A9")


@pytest.fixture(scope="module")
def runtime_core(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """What containers get on PYTHONPATH: ketch and cloudpickle, copied from this env."""
    from ketch._server import runtime_dist

    return runtime_dist.install(tmp_path_factory.mktemp("runtime-home"))[0]


class Log:
    """Collects build log lines, with the time each one arrived."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.times: list[float] = []

    def __call__(self, line: str) -> None:
        self.lines.append(line)
        self.times.append(time.monotonic())

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("image-cache")


@pytest.fixture
def builder(cache_dir: Path) -> ImageBuilder:
    return ImageBuilder(cache_dir)


def build(
    builder: ImageBuilder, image: Image | dict[str, Any], log: Log | None = None
) -> BuiltImage:
    spec = image.spec() if isinstance(image, Image) else image
    return asyncio.run(builder.build(spec, log if log is not None else Log()))


def run_in(built: BuiltImage, code: str, pythonpath: Path | None = None) -> str:
    import os

    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    if pythonpath is not None:
        env["PYTHONPATH"] = str(pythonpath)
    result = subprocess.run(
        [str(built.python), "-c", code], capture_output=True, text=True, timeout=60, env=env
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def cache_entries(cache_dir: Path) -> set[str]:
    return {p.name for p in cache_dir.iterdir()} if cache_dir.exists() else set()


def test_default_image_is_bare_and_gets_ketch_from_the_runtime(
    builder: ImageBuilder, runtime_core: Path
) -> None:
    log = Log()
    image = Image.debian_slim()
    built = build(builder, image, log)
    assert built.hash == image.content_hash()
    assert built.root == builder.cache_dir / built.hash
    assert (built.root / ".ok").is_file()
    assert "==> debian_slim" in log.text
    # Nothing of the server's environment leaks into an image...
    assert run_in(built, "import importlib.util as u; print(u.find_spec('cloudpickle'))") == "None"
    # ...and containers see ketch's private runtime copy through PYTHONPATH.
    out = run_in(
        built,
        "import sys, cloudpickle, ketch; "
        "print(cloudpickle.__version__, ketch.__file__, sys.prefix)",
        pythonpath=runtime_core,
    )
    version, ketch_file, prefix = out.split()
    assert version == importlib.metadata.version("cloudpickle")
    assert Path(ketch_file).is_relative_to(runtime_core)
    assert Path(prefix) == built.root / "venv"
    assert built.env == {}
    assert built.workdir is None


def test_unchanged_image_is_not_rebuilt(builder: ImageBuilder, cache_dir: Path) -> None:
    first = build(builder, Image.debian_slim())
    ok_mtime = (first.root / ".ok").stat().st_mtime_ns
    entries = cache_entries(cache_dir)

    log = Log()
    again = build(ImageBuilder(cache_dir), Image.debian_slim(), log)
    assert again == first
    assert log.lines == []
    assert (again.root / ".ok").stat().st_mtime_ns == ok_mtime
    assert cache_entries(cache_dir) == entries


def test_pip_install_env_workdir_and_copied_files(builder: ImageBuilder, tmp_path: Path) -> None:
    copied = tmp_path / "copied.txt"
    copied.write_text("baked in")
    mounted = tmp_path / "mounted.txt"
    mounted.write_text("mounted later")
    image = (
        Image.debian_slim()
        .pip_install("six")
        .add_local_file(copied, "/etc/app/copied.txt", copy=True)
        .env({"KETCH_TEST_VAR": "hello"})
        .workdir("/app")
        .add_local_file(mounted, "/etc/app/mounted.txt")
    )
    log = Log()
    built = build(builder, image, log)
    assert 'pip_install("six")' in log.text
    assert any("six" in line and "+" in line for line in log.lines)
    assert run_in(built, "import six; print(six.__name__)") == "six"
    assert built.env == {"KETCH_TEST_VAR": "hello"}
    assert built.workdir == "/app"
    assert (built.root / "files" / "etc" / "app" / "copied.txt").read_text() == "baked in"
    assert not (built.root / "files" / "etc" / "app" / "mounted.txt").exists()


def test_uv_pip_install_from_requirements(builder: ImageBuilder, tmp_path: Path) -> None:
    req = tmp_path / "requirements.txt"
    req.write_text("six\n")
    built = build(builder, Image.debian_slim().uv_pip_install(requirements=[str(req)]))
    assert run_in(built, "import six; print('ok')") == "ok"
    assert not (built.root / ".build").exists()


def test_failed_step_is_named_with_log_tail_and_not_cached(
    builder: ImageBuilder, cache_dir: Path
) -> None:
    image = Image.debian_slim().pip_install("ketch-nonexistent-package-zzz")
    before = cache_entries(cache_dir)
    log = Log()
    with pytest.raises(ImageBuildError) as info:
        build(builder, image, log)
    message = str(info.value)
    assert 'pip_install("ketch-nonexistent-package-zzz")' in message
    assert info.value.step == 'pip_install("ketch-nonexistent-package-zzz")'
    assert "ketch-nonexistent-package-zzz" in info.value.log_tail
    assert info.value.log_tail in message
    assert cache_entries(cache_dir) == before
    assert image.content_hash() not in cache_entries(cache_dir)


def test_missing_python_version_is_refused(builder: ImageBuilder, cache_dir: Path) -> None:
    before = cache_entries(cache_dir)
    with pytest.raises(ImageBuildError, match=r"Python 3\.99 is not installed on this machine"):
        build(builder, Image.debian_slim("3.99"))
    assert cache_entries(cache_dir) == before


def test_unknown_step_types_are_refused(builder: ImageBuilder, cache_dir: Path) -> None:
    # apt_install and run_commands build as root filesystems (see test_rootfs_build.py).
    spec = Image.debian_slim().spec()
    spec["steps"] = [{"type": "conda_install", "packages": ["numpy"]}]
    before = cache_entries(cache_dir)
    log = Log()
    with pytest.raises(InvalidError, match="unknown image step type 'conda_install'"):
        build(builder, spec, log)
    assert log.lines == []
    assert cache_entries(cache_dir) == before


def test_concurrent_builds_of_one_image_share_one_build(
    cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    builder = ImageBuilder(cache_dir)
    calls = 0
    original = builder._build_into

    async def counting(*args: Any) -> None:
        nonlocal calls
        calls += 1
        await original(*args)

    monkeypatch.setattr(builder, "_build_into", counting)
    spec = Image.debian_slim().env({"KETCH_CONCURRENT": "1"}).spec()
    logs = [Log(), Log(), Log()]

    async def main() -> list[BuiltImage]:
        return list(await asyncio.gather(*(builder.build(spec, log) for log in logs)))

    results = asyncio.run(main())
    assert calls == 1
    assert results[0] == results[1] == results[2]
    assert all("==> debian_slim" in log.text for log in logs)


def test_log_lines_stream_while_the_step_runs(builder: ImageBuilder) -> None:
    log = Log()
    script = "import sys, time; print('first', flush=True); time.sleep(0.6); print('second')"
    started = time.monotonic()
    asyncio.run(builder._run([sys.executable, "-c", script], "streaming test", log))
    assert log.lines == ["==> streaming test", "first", "second"]
    assert log.times[1] - started < 0.5
    assert log.times[2] - log.times[1] > 0.4


def test_mount_files_materialises_copy_false_files(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "pkg").mkdir(parents=True)
    (src / "pkg" / "__init__.py").write_text("X = 1\n")
    (src / "pkg" / "skip.log").write_text("noise")
    single = tmp_path / "one.txt"
    single.write_text("one")
    baked = tmp_path / "baked.txt"
    baked.write_text("baked")
    image = (
        Image.debian_slim()
        .add_local_file(baked, "/baked.txt", copy=True)
        .add_local_dir(src, "/root/src", ignore=["*.log"])
        .add_local_file(single, "/data/one.txt")
    )
    dest = tmp_path / "mounts"
    mount_files(image.spec(), dest)
    assert (dest / "root" / "src" / "pkg" / "__init__.py").read_text() == "X = 1\n"
    assert not (dest / "root" / "src" / "pkg" / "skip.log").exists()
    assert (dest / "data" / "one.txt").read_text() == "one"
    assert not (dest / "baked.txt").exists()

    marker_mtime = (dest / ".ok").stat().st_mtime_ns
    mount_files(image.spec(), dest)
    assert (dest / ".ok").stat().st_mtime_ns == marker_mtime

    single.write_text("two")
    mount_files(image.spec(), dest)
    assert (dest / "data" / "one.txt").read_text() == "two"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_mount_files_refuses_content_changed_since_the_spec(tmp_path: Path) -> None:
    f = tmp_path / "f.txt"
    f.write_text("at deploy")
    spec = Image.debian_slim().add_local_file(f, "/f.txt").spec()
    f.write_text("edited later")
    with pytest.raises(ImageBuildError, match="changed"):
        mount_files(spec, tmp_path / "mounts")
    assert not (tmp_path / "mounts").exists()
