"""Image.micromamba and micromamba_install on the builder's side: conda packages solved and
installed into /opt/conda of a root-filesystem image by rattler (py-rattler, the library
behind pixi), run inside the image being built like any other step.

The step runs the image's Debian Python with the server's rattler package lent read-only,
so nothing of the installer stays in the layer. Each step solves everything requested so
far (kept in /opt/conda/.ketch-requested.json) with the installed packages locked, as
`micromamba install` keeps what an environment has.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from ketch._images.bwrap import Bind
from ketch._images.dockerfile import Env, Run
from ketch._images.function_step import RAISED, StepExtra
from ketch._images.process import ImageBuildError
from ketch._images.rootfs import Op

__all__ = ["PREFIX", "PYTHON", "CondaResources", "conda_ops", "mirrors"]

PREFIX = "/opt/conda"
PYTHON = f"{PREFIX}/bin/python"
_LIB = "/tmp/.ketch/conda-lib"
_PKGS = "/tmp/.ketch/conda-pkgs"
_IN = "/tmp/.ketch/in"
_CHANNELS = "/tmp/.ketch/channels"
_DEBIAN_PYTHON = "/usr/bin/python3"
_DEFAULT_CHANNELS = ("conda-forge",)
# name=url,name=url: where the server fetches a named channel (a mirror, or a local
# channel directory as file:///path). Operator configuration, not part of the image.
MIRRORS_ENV = "KETCH_CONDA_MIRRORS"

BOOTSTRAP = f"""\
import asyncio, json, os, sys

sys.path.insert(0, {_LIB!r})
with open({_IN + "/conda.json"!r}, encoding="utf-8") as f:
    step = json.load(f)
prefix = {PREFIX!r}
meta = os.path.join(prefix, "conda-meta")
# Outside conda-meta, which rattler reads as the installed packages' records.
requested_file = os.path.join(prefix, ".ketch-requested.json")
mirrors = dict(
    pair.split("=", 1) for pair in os.environ.get({MIRRORS_ENV!r}, "").split(",") if "=" in pair
)


async def main():
    import rattler

    installed = []
    requested = []
    if os.path.isdir(meta):
        for name in sorted(os.listdir(meta)):
            if name.endswith(".json"):
                installed.append(rattler.PrefixRecord.from_path(os.path.join(meta, name)))
    if os.path.exists(requested_file):
        with open(requested_file, encoding="utf-8") as f:
            requested = json.load(f)
    specs = requested + [s for s in step["specs"] if s not in requested]
    channels = [mirrors.get(c, c) for c in step["channels"]]
    print("solving " + " ".join(specs) + " from " + ", ".join(channels), flush=True)
    records = await rattler.solve(
        sources=channels,
        specs=specs,
        locked_packages=installed,
        virtual_packages=rattler.VirtualPackage.detect(),
    )
    for r in records:
        print("  " + r.name.normalized + " " + str(r.version) + " " + str(r.build), flush=True)
    await rattler.install(
        records,
        target_prefix=prefix,
        cache_dir={_PKGS!r},
        installed_packages=installed,
        show_progress=False,
    )
    with open(requested_file, "w", encoding="utf-8") as f:
        json.dump(specs, f)


try:
    asyncio.run(main())
except BaseException as exc:
    print({RAISED!r} + type(exc).__name__ + ": " + str(exc).strip(), flush=True)
    # At once: rattler's threads would still be running while the interpreter finalizes.
    os._exit(1)
"""


def mirrors() -> dict[str, str]:
    """The server's channel mirrors (KETCH_CONDA_MIRRORS), name -> URL."""
    pairs = (p.split("=", 1) for p in os.environ.get(MIRRORS_ENV, "").split(",") if "=" in p)
    return {name.strip(): url.strip() for name, url in pairs}


def conda_ops(step: Mapping[str, Any], origin: str, extra: StepExtra) -> list[Op]:
    """The ops of a micromamba step (Python into a new /opt/conda, which then comes first
    on PATH) or a micromamba_install step (more packages there)."""
    if step["type"] == "micromamba":
        params = {"specs": [f"python={step['python_version']}"], "channels": _DEFAULT_CHANNELS}
    else:
        params = {"specs": step["specs"], "channels": step.get("channels") or _DEFAULT_CHANNELS}
    body = json.dumps(params, sort_keys=True, separators=(",", ":"))
    shown = " ".join(params["specs"])
    run = Run(argv=(_DEBIAN_PYTHON, f"{_IN}/conda.py"), text=f"RUN conda install {shown}")
    ops = [Op(run, origin, inputs=(("conda.py", BOOTSTRAP), ("conda.json", body)), extra=extra)]
    if step["type"] == "micromamba":
        path = f"{PREFIX}/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
        env = (("PATH", path), ("CONDA_PREFIX", PREFIX), ("MAMBA_ROOT_PREFIX", PREFIX))
        ops.append(Op(Env(vars=env), origin))
    return ops


@dataclass
class CondaResources:
    """What a conda step is lent while it runs: rattler, the shared package cache, and
    the directories of local (file://) channel mirrors."""

    cache: Path

    def extra(self, step: Mapping[str, Any], origin: str) -> StepExtra:
        def prepare() -> tuple[dict[str, str], list[Bind]]:
            lib = _rattler_dir(origin)
            self.cache.mkdir(parents=True, exist_ok=True)
            binds = [Bind(lib, f"{_LIB}/rattler"), Bind(self.cache, _PKGS, writable=True)]
            # A local channel is lent under /tmp/.ketch (left out of the layer) and the
            # step told where: name or URL -> the URL it reads.
            where: dict[str, str] = {}
            found = mirrors()
            found.update((c, c) for c in step.get("channels", []) if c not in found)
            for name, url in found.items():
                parsed = urlparse(url)
                if parsed.scheme == "file" and Path(parsed.path).is_dir():
                    inside = f"{_CHANNELS}/{len(binds)}"
                    binds.append(Bind(Path(parsed.path), inside))
                    url = f"file://{inside}"
                where[name] = url
            env = {"PYTHONNOUSERSITE": "1", "PYTHONUNBUFFERED": "1"}
            env[MIRRORS_ENV] = ",".join(f"{k}={v}" for k, v in where.items())
            return env, binds

        return StepExtra(prepare, str(step["type"]))


def _rattler_dir(origin: str) -> Path:
    try:
        import rattler
    except ImportError:
        raise ImageBuildError(
            origin, "", "conda images need py-rattler on the server: pip install 'ketch[conda]'"
        ) from None
    return Path(rattler.__file__).parent
