"""A local conda channel made by hand for tests (no conda channel can be reached here):
real package archives (.tar.bz2 with info/index.json and info/paths.json) indexed by
rattler into a real repodata.json, so the builder's solve and install are the real ones.

Its `python` package is a venv-like prefix over the Debian Python of ketch's base image
(a pyvenv.cfg and links to /usr/bin/python3.11): a real conda-forge Python is 30 MB that
this machine cannot download, and the image's interpreter is the same 3.11."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import tarfile
from collections.abc import Mapping
from pathlib import Path

_MTIME = 1_700_000_000


def _package(
    channel: Path,
    subdir: str,
    name: str,
    version: str,
    files: Mapping[str, bytes],
    *,
    links: Mapping[str, str] | None = None,
    depends: tuple[str, ...] = (),
    noarch: str | None = None,
) -> None:
    links = links or {}
    index: dict[str, object] = {
        "name": name, "version": version, "build": "0", "build_number": 0,
        "depends": list(depends), "subdir": subdir, "timestamp": _MTIME * 1000,
        "license": "MIT",
    }  # fmt: skip
    if noarch is not None:
        index["noarch"] = noarch
    paths: list[dict[str, object]] = [
        {"_path": p, "path_type": "hardlink", "sha256": hashlib.sha256(d).hexdigest(),
         "size_in_bytes": len(d)}
        for p, d in files.items()
    ]  # fmt: skip
    paths += [{"_path": p, "path_type": "softlink", "size_in_bytes": 0} for p in links]
    out = channel / subdir / f"{name}-{version}-0.tar.bz2"
    out.parent.mkdir(parents=True, exist_ok=True)

    def member(tar: tarfile.TarFile, path: str, data: bytes, mode: int = 0o644) -> None:
        info = tarfile.TarInfo(path)
        info.size, info.mode, info.mtime = len(data), mode, _MTIME
        tar.addfile(info, io.BytesIO(data))

    with tarfile.open(out, "w:bz2") as tar:
        member(tar, "info/index.json", json.dumps(index).encode())
        member(tar, "info/paths.json", json.dumps({"paths": paths, "paths_version": 1}).encode())
        member(tar, "info/files", ("\n".join([*files, *links]) + "\n").encode())
        for path, data in files.items():
            member(tar, path, data, 0o755 if path.startswith("bin/") else 0o644)
        for path, target in links.items():
            info = tarfile.TarInfo(path)
            info.type, info.linkname, info.mtime = tarfile.SYMTYPE, target, _MTIME
            tar.addfile(info)


def make_channel(channel: Path) -> Path:
    """Python 3.11, a noarch Python package `ketchprobe` (1.0 and 2.0) and a program
    package `hello-conda`; returns the channel directory."""
    cfg = b"home = /usr/bin\ninclude-system-site-packages = false\nversion = 3.11.2\n"
    _package(
        channel, "linux-64", "python", "3.11.2",
        {"pyvenv.cfg": cfg, "lib/python3.11/site-packages/.keep": b""},
        links={"bin/python3.11": "/usr/bin/python3.11", "bin/python3": "python3.11",
               "bin/python": "python3.11"},
    )  # fmt: skip
    for version in ("1.0", "2.0"):
        probe = f"VALUE = {version!r}\n".encode()
        _package(
            channel, "noarch", "ketchprobe", version, {"site-packages/ketchprobe.py": probe},
            depends=("python >=3.8",), noarch="python",
        )  # fmt: skip
    script = b"#!/bin/sh\necho hello from conda\n"
    _package(channel, "linux-64", "hello-conda", "1.0", {"bin/hello-conda": script})

    import rattler

    asyncio.run(rattler.index.index_fs(channel, write_zst=False, write_shards=False))
    return channel
