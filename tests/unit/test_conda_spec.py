"""Image.micromamba / micromamba_install as the SDK records them and the builder plans
them (pure logic; the real builds are in tests/integration/test_conda_images.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

import ketch
from ketch._images import conda, steps
from ketch.exception import InvalidError

pytestmark = pytest.mark.spec("I1")


def test_micromamba_records_python_and_specs_in_order() -> None:
    image = ketch.Image.micromamba(python_version="3.12").micromamba_install(
        "numpy=1.26", ["scipy>=1.11,<2"], channels=["conda-forge", "bioconda"]
    )
    spec = image.spec()
    assert spec["python_version"] == "3.12"
    assert spec["steps"] == [
        {"type": "micromamba", "python_version": "3.12"},
        {"type": "micromamba_install", "specs": ["numpy=1.26", "scipy>=1.11,<2"],
         "channels": ["conda-forge", "bioconda"]},
    ]  # fmt: skip
    assert (
        ketch.Image.micromamba("3.12").micromamba_install().spec()
        == ketch.Image.micromamba("3.12").spec()
    )  # nothing to install: no step


def test_bad_input_is_refused_when_defined(tmp_path: Path) -> None:
    with pytest.raises(InvalidError, match=r"needs an image started with Image\.micromamba"):
        ketch.Image.debian_slim().micromamba_install("numpy")
    base = ketch.Image.micromamba("3.11")
    with pytest.raises(InvalidError, match="not a package spec"):
        base.micromamba_install("numpy; rm -rf /")
    with pytest.raises(InvalidError, match="not a channel"):
        base.micromamba_install("numpy", channels=["conda forge"])
    with pytest.raises(InvalidError, match=r'python_version must look like "3\.X"'):
        ketch.Image.micromamba("three")
    with pytest.raises(InvalidError, match="without a GPU"):
        base.micromamba_install("numpy", gpu="T4")
    with pytest.raises(InvalidError, match="cannot read"):
        base.micromamba_install(spec_file=tmp_path / "missing.yml")


def test_spec_files_give_specs_and_channels(tmp_path: Path) -> None:
    env = tmp_path / "environment.yml"
    env.write_text("name: x\nchannels: [bioconda]\ndependencies:\n  - samtools=1.19\n  - zlib\n")
    step = ketch.Image.micromamba("3.11").micromamba_install(
        "numpy", spec_file=env, channels=["conda-forge"]
    ).spec()["steps"][-1]  # fmt: skip
    assert step["specs"] == ["numpy", "samtools=1.19", "zlib"]
    assert step["channels"] == ["conda-forge", "bioconda"]
    plain = tmp_path / "specs.txt"
    plain.write_text("# pinned\nnumpy=1.26  # math\n\n@EXPLICIT\npandas\n")
    got = ketch.Image.micromamba("3.11").micromamba_install(spec_file=plain).spec()
    assert got["steps"][-1]["specs"] == ["numpy=1.26", "pandas"]
    with_pip = tmp_path / "pip.yml"
    with_pip.write_text("dependencies:\n  - numpy\n  - pip:\n      - requests\n")
    with pytest.raises(InvalidError, match=r"install pip packages with .pip_install"):
        ketch.Image.micromamba("3.11").micromamba_install(spec_file=with_pip)


def test_the_builder_plans_conda_steps_on_debian_with_the_conda_python() -> None:
    spec = ketch.Image.micromamba("3.12").micromamba_install("numpy").spec()
    lent: list[str] = []

    def extras(step: dict, origin: str) -> object:
        lent.append(step["type"])
        return object()

    base, ops = steps.plan(spec, {}, extras)  # type: ignore[arg-type]
    assert base.python == conda.PYTHON == "/opt/conda/bin/python"  # type: ignore[attr-defined]
    assert lent == ["micromamba", "micromamba_install"]
    runs = [op for op in ops if op.inputs]
    assert [dict(op.inputs)["conda.json"] for op in runs] == [
        '{"channels":["conda-forge"],"specs":["python=3.12"]}',
        '{"channels":["conda-forge"],"specs":["numpy"]}',
    ]
    # Python 3.12 is not Debian's: no interpreter is added, conda brings it.
    assert not any("add_python" in op.origin for op in ops)
    late = {"python_version": "3.11", "steps": [
        {"type": "apt_install", "packages": ["jq"]},
        {"type": "micromamba", "python_version": "3.11"},
    ], "files": []}  # fmt: skip
    with pytest.raises(InvalidError, match="must be the first step"):
        steps.plan(late, {}, extras)  # type: ignore[arg-type]
