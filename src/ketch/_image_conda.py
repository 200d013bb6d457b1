"""Image.micromamba and micromamba_install: conda environments in an image.

The SDK side only records what was asked (a Python version, package specs, channels); the
server solves and installs them with rattler, conda's library behind pixi, into /opt/conda
of a root-filesystem image (see ketch._images.conda).
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ketch._image_helpers import check_build_only
from ketch.exception import InvalidError

if TYPE_CHECKING:
    from ketch.image import Image
    from ketch.secret import Secret

__all__ = ["micromamba", "micromamba_install"]

_PYTHON_VERSION = re.compile(r"3\.\d+")
# A conda match spec as micromamba's command line takes one ("numpy", "numpy=1.26",
# "conda-forge::numpy>=1.2,<2"); the solver checks the rest.
_SPEC = re.compile(r"[A-Za-z0-9_.:/-][A-Za-z0-9_.:/<>=!*,|~ \[\]'\"-]*")
_CHANNEL = re.compile(r"[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*|(https?|file)://\S+")


def micromamba(
    cls: type[Image], python_version: str | None = None, force_build: bool = False
) -> Image:
    """An image whose Python is a conda environment at /opt/conda (Python from conda-forge,
    `python_version` "3.X", default: the local one), where `micromamba_install` adds
    packages. `force_build` is accepted for Modal compatibility (`--force-build`)."""
    if python_version is None:
        python_version = f"{sys.version_info.major}.{sys.version_info.minor}"
    if not isinstance(python_version, str) or not _PYTHON_VERSION.fullmatch(python_version):
        raise InvalidError(
            f'Image.micromamba: python_version must look like "3.X", got {python_version!r}'
        )
    return cls(python_version)._with_step("micromamba", {"python_version": python_version})


def micromamba_install(
    self: Image,
    *packages: str | list[str],
    spec_file: str | os.PathLike[str] | None = None,
    channels: Sequence[str] = (),
    force_build: bool = False,
    secrets: Sequence[Secret] = (),
    gpu: object = None,
) -> Image:
    """Install conda packages into the image's /opt/conda, solved against `channels`
    (default conda-forge) together with everything installed there before. `spec_file`
    is an environment.yml (its `dependencies` and `channels`) or a file of specs, one a
    line, read now."""
    check_build_only("micromamba_install", secrets, gpu)
    if not self._has_step("micromamba"):
        raise InvalidError(
            "Image.micromamba_install needs an image started with Image.micromamba(...)"
        )
    specs: list[str] = []
    for item in packages:
        for spec in [item] if isinstance(item, str) else list(item):
            if not isinstance(spec, str) or not _SPEC.fullmatch(spec.strip()):
                raise InvalidError(f"Image.micromamba_install: not a package spec: {spec!r}")
            specs.append(spec.strip())
    chans = list(channels)
    if spec_file is not None:
        file_specs, file_channels = _read_spec_file(Path(spec_file))
        specs += file_specs
        chans += [c for c in file_channels if c not in chans]
    for channel in chans:
        if not isinstance(channel, str) or not _CHANNEL.fullmatch(channel):
            raise InvalidError(f"Image.micromamba_install: not a channel: {channel!r}")
    if not specs:
        return self
    return self._with_step("micromamba_install", {"specs": specs, "channels": chans})


def _read_spec_file(path: Path) -> tuple[list[str], list[str]]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise InvalidError(f"Image.micromamba_install: cannot read {path}: {exc}") from None
    if path.suffix not in (".yml", ".yaml"):
        lines = [line.split("#", 1)[0].strip() for line in text.splitlines()]
        return [line for line in lines if line and not line.startswith("@")], []
    import yaml

    try:
        env: Any = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise InvalidError(f"Image.micromamba_install: {path} is not valid YAML: {exc}") from None
    deps = env.get("dependencies", []) if isinstance(env, dict) else None
    if not isinstance(deps, list):
        raise InvalidError(f"Image.micromamba_install: {path} has no list of dependencies")
    specs: list[str] = []
    for dep in deps:
        if isinstance(dep, dict):
            # A `pip:` list: pip's packages install with pip_install, after this step.
            raise InvalidError(
                f"Image.micromamba_install: {path} lists {sorted(dep)} entries; install pip "
                "packages with .pip_install(...) after this step"
            )
        specs.append(str(dep))
    channels = env.get("channels", []) or []
    return specs, [str(c) for c in channels]
