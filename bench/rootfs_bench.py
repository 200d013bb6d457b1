#!/usr/bin/env python
"""Root-filesystem image builds (issue 13): the Debian base, a cached rebuild, an apt layer,
a RUN layer, a pip install both ways (venv image against root-filesystem layer), and disk
per image with shared layers counted once; all in one run, on one cache.

    .venv/bin/python bench/rootfs_bench.py [--cache DIR] [--keep]

Each build goes through the server's ImageBuilder, as a deploy does. --cache names the
root-filesystem cache; by default a new empty one, so that the first row is a real base
build (mmdebstrap from Debian's mirror, about half a minute); an existing cache makes that
row a cached one and says so. The venv images go to a new directory either way. Needs root,
mmdebstrap and bwrap (scripts/setup). Prints a table; results go to bench/results/.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

from _common import save_result  # noqa: E402

from ketch._server.images import BuiltImage, ImageBuilder  # noqa: E402
from ketch.image import Image  # noqa: E402


def _du(path: Path) -> int:
    """Bytes under `path` (each inode once), as the filesystem holds them."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for root, dirs, files in os.walk(path):
        for name in dirs + files:
            st = os.lstat(os.path.join(root, name))
            if (st.st_dev, st.st_ino) not in seen:
                seen.add((st.st_dev, st.st_ino))
                total += st.st_blocks * 512
    return total


def _layer_dirs(image: BuiltImage) -> list[Path]:
    assert image.rootfs is not None
    return list(image.rootfs.layer_dirs)


async def _timed(builder: ImageBuilder, image: Image) -> tuple[float, BuiltImage, list[str]]:
    lines: list[str] = []
    t0 = time.perf_counter()
    built = await builder.build(image.spec(), lines.append)
    return time.perf_counter() - t0, built, lines


async def run(cache: Path, images_dir: Path) -> dict[str, Any]:
    builder = ImageBuilder(images_dir, rootfs_dir=cache)
    fresh = not any((cache / "bases").glob("*/.ok")) if (cache / "bases").exists() else True
    marker = uuid.uuid4().hex[:12]  # steps that must really build, whatever the cache holds
    base = Image.debian_slim().run_commands(f"echo {marker} > /opt/base-marker")
    rows: list[tuple[str, float, str]] = []

    secs, first, _ = await _timed(builder, base)
    rows.append(
        (f"Debian base + one RUN ({'empty cache' if fresh else 'base was cached'})", secs, "rootfs")
    )
    secs, _, lines = await _timed(builder, base)
    cached = all("(cached)" in line for line in lines if line.startswith("==> ["))
    rows.append((f"the same image again ({'all cached' if cached else 'REBUILT'})", secs, "rootfs"))

    apt = base.apt_install("jq")
    secs, with_jq, _ = await _timed(builder, apt)
    rows.append(('apt_install("jq") layer', secs, "rootfs"))
    secs, _, _ = await _timed(builder, apt.run_commands(f"echo {marker} > /opt/run-marker"))
    rows.append(('run_commands("echo …") layer', secs, "rootfs"))

    # The same pip step both ways: a venv image (no root-filesystem step) and a layer.
    package = "six"
    secs, _, lines = await _timed(
        builder, Image.debian_slim().pip_install(package).env({"M": marker})
    )
    kind = "venv" if any("venv image" in line for line in lines) else "?"
    rows.append((f'pip_install("{package}") as a venv image', secs, kind))
    secs, _, lines = await _timed(builder, base.pip_install(package))
    rows.append((f'pip_install("{package}") as a layer on the base', secs, "rootfs"))

    layers = {"base": _layer_dirs(first), "base+jq": _layer_dirs(with_jq)}
    sizes = {str(d): _du(d) for ds in layers.values() for d in ds}
    disk = {name: sum(sizes[str(d)] for d in ds) for name, ds in layers.items()}
    disk["both, shared layers once"] = sum(sizes.values())
    return {"rows": rows, "disk": disk}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cache", type=Path, help="root-filesystem cache (default: a new one)")
    ap.add_argument("--keep", action="store_true", help="keep the new cache afterwards")
    args = ap.parse_args()
    if os.geteuid() != 0 or not (shutil.which("mmdebstrap") and shutil.which("bwrap")):
        sys.exit("needs root, mmdebstrap and bwrap (scripts/setup)")
    work = Path(tempfile.mkdtemp(prefix="ketch-rootfs-bench-"))
    cache = args.cache or work / "rootfs"
    try:
        result = asyncio.run(run(cache, work / "images"))
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print(f"{'build':58} {'seconds':>8}  path")
    for what, secs, kind in result["rows"]:
        print(f"{what:58} {secs:8.2f}  {kind}")
    print()
    for name, size in result["disk"].items():
        print(f"disk {name:53} {size / 2**20:8.1f} MiB")
    print(f"results: {save_result('rootfs', result)}")


if __name__ == "__main__":
    main()
