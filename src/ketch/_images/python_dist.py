"""`add_python`: a relocatable CPython from this server's uv-managed interpreters, copied
into an image's /usr/local as Modal puts its standalone build there.

Only uv-managed installs (python-build-standalone) qualify: they carry their own libraries
and find their standard library relative to the executable. pyenv's and the system's
builds link the host's shared libraries and are never copied. ketch downloads nothing:
what `uv python install 3.X` left on this machine is what can be added.
"""

from __future__ import annotations

import os
import platform
import re
from pathlib import Path

from ketch._images.dockerfile import Copy
from ketch._images.rootfs import Op
from ketch.exception import InvalidError

__all__ = ["PREFIX", "add_python_ops", "find_standalone", "interpreter", "uv_python_dir"]

PREFIX = "/usr/local"
# cpython-3.12.7-linux-x86_64-gnu; freethreaded and debug builds have a +tag and are skipped.
_DIR_RE = re.compile(r"cpython-(3\.\d+)(?:\.(\d+))?-linux-([a-z0-9_]+)-gnu")


def uv_python_dir() -> Path:
    """Where uv keeps its managed interpreters (what `uv python dir` prints)."""
    explicit = os.environ.get("UV_PYTHON_INSTALL_DIR")
    if explicit:
        return Path(explicit).expanduser()
    data = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(data) / "uv" / "python"


def find_standalone(version: str, where: Path | None = None) -> Path | None:
    """The newest uv-managed CPython `version` ("3.X") for this machine's architecture."""
    root = uv_python_dir() if where is None else where
    try:
        names = os.listdir(root)
    except OSError:
        return None
    arch = platform.machine().lower()
    best: tuple[int, Path] | None = None
    for name in names:
        found = _DIR_RE.fullmatch(name)
        if found is None or found.group(1) != version or found.group(3) != arch:
            continue
        path = (root / name).resolve()
        if not (path / "bin" / f"python{version}").is_file():
            continue
        if not (path / "lib" / f"python{version}" / "os.py").is_file():
            continue
        patch = int(found.group(2) or -1)
        if best is None or patch > best[0]:
            best = (patch, path)
    return None if best is None else best[1]


def interpreter(version: str) -> str:
    """The added interpreter's path inside the image."""
    return f"{PREFIX}/bin/python{version}"


def add_python_ops(version: str, origin: str) -> list[Op]:
    """The build step that puts Python `version` into the image, or a refusal naming
    what to install on the server."""
    dist = find_standalone(version)
    if dist is None:
        raise InvalidError(
            f"{origin}: no relocatable Python {version} on this server (ketch copies a "
            f"uv-managed interpreter from {uv_python_dir()} and downloads none); run "
            f"`uv python install {version}` on the server, or use an image that has Python"
        )
    return [Op(Copy(sources=(".",), dest=f"{PREFIX}/"), origin, context=dist)]
