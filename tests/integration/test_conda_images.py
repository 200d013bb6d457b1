"""Image.micromamba / micromamba_install on real root-filesystem builds, against a local
conda channel (tests/supports/conda_channel.py) that the server is told to use for
conda-forge (KETCH_CONDA_MIRRORS): Python and packages come from the channel into
/opt/conda, containers run on that Python and see the packages, a later install solves
with what is there, and a package no channel has fails the deploy naming it."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import test_rootfs_containers as rootfs
from cli_support import ketch, ok, write

from supports.conda_channel import make_channel

pytestmark = [*rootfs.pytestmark, pytest.mark.spec("I1")]


@pytest.fixture(scope="module")
def channel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_channel(tmp_path_factory.mktemp("conda-channel"))


@pytest.fixture
def conda_server(
    channel: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, ketch_server: Any
) -> Iterator[Any]:
    # Set before the server starts; fresh_server is requested through the fixture below.
    monkeypatch.setenv("KETCH_CONDA_MIRRORS", f"conda-forge=file://{channel}")
    yield


_APP = """
import ketch

image = (
    ketch.Image.micromamba(python_version="3.11")
    .micromamba_install("ketchprobe=1.0", channels=["conda-forge"])
    .run_commands("echo {mark}")
    .micromamba_install("hello-conda")
)
app = ketch.App({name!r}, image=image)


@app.function()
def probe() -> dict:
    import os, subprocess, sys

    import ketchprobe

    hello = subprocess.run(["hello-conda"], capture_output=True, text=True).stdout.strip()
    return {{"python": sys.executable, "prefix": sys.prefix, "probe": ketchprobe.VALUE,
             "hello": hello, "conda_prefix": os.environ.get("CONDA_PREFIX")}}
"""


def test_micromamba_images_install_from_the_channel_and_run_on_its_python(
    conda_server: None, fresh_server: Any, tmp_path: Path
) -> None:
    name, mark = f"conda-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex[:10]
    app_file = write(tmp_path / "app.py", _APP.format(name=name, mark=mark))
    done = ketch(fresh_server.home, "deploy", str(app_file), timeout=400)
    log = ok(done) + done.stderr
    assert 'micromamba(python_version="3.11")' in log and "python 3.11.2" in log, log
    got = rootfs._call(fresh_server.home, name, "probe")
    assert got["python"].startswith("/opt/conda/bin/python"), got
    assert got["prefix"] == "/opt/conda" and got["conda_prefix"] == "/opt/conda", got
    # The pinned 1.0 stays when a later step installs more: every request is solved again.
    assert got["probe"] == "1.0" and got["hello"] == "hello from conda", got
    assert "solving python=3.11 ketchprobe=1.0 hello-conda from" in log, log


_MISSING = """
import ketch

image = ketch.Image.micromamba("3.11").micromamba_install("no-such-pkg-{mark}")
app = ketch.App({name!r}, image=image)


@app.function()
def f() -> int:
    return 1
"""


def test_a_package_no_channel_has_fails_the_deploy_naming_it(
    conda_server: None, fresh_server: Any, tmp_path: Path
) -> None:
    name, mark = f"conda-no-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex[:8]
    app_file = write(tmp_path / "app.py", _MISSING.format(name=name, mark=mark))
    done = ketch(fresh_server.home, "deploy", str(app_file), timeout=400)
    assert done.returncode != 0, done.stderr
    assert f"no-such-pkg-{mark}" in done.stderr and "micromamba_install" in done.stderr, done.stderr
    assert name not in ok(ketch(fresh_server.home, "app", "list"))
