"""What built images there are, what they take on disk and who uses them; removing them
(`ketch image list | rm | prune`).

A venv image is one directory, `<KETCH_HOME>/images/<hash>`. A root-filesystem image is a
stack of layers in the layer cache, which images with a common prefix share; its record,
`<KETCH_HOME>/images/<hash>/rootfs.json`, names them. A layer goes only when no remaining
image of this server names it. Bases (the Debian base, pulled registry images) stay
unless asked for, as they take long to make again. The layer cache may be shared between
servers (KETCH_ROOTFS_CACHE): a layer no image of this server names is then left alone,
as it may be another server's; in a cache of this server's own it is removed by prune.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ketch._server.images import ROOTFS_RECORD
from ketch.exception import InvalidError, NotFoundError

__all__ = ["ImageEntry", "ImageStore", "Users", "disk_usage"]

_OK = ".ok"
_MIN_PREFIX = 4
# Left in the images directory by builds that were killed or replaced (see images.py).
_LEFTOVER_PREFIXES = (".tmp-",)
_LEFTOVER_MARK = ".old-"

# image hash -> who uses it: [{"app", "environment", "function", "state"}]
Users = Mapping[str, list[dict[str, str]]]


def disk_usage(path: Path, seen: set[tuple[int, int]] | None = None) -> int:
    """Bytes `path` takes on disk, every inode counted once (once over all calls that
    share `seen`): hard links and layers shared between images do not add up twice."""
    seen = set() if seen is None else seen
    total = 0
    stack = [path]
    while stack:
        current = stack.pop()
        try:
            st = current.lstat()
        except OSError:
            continue
        if (st.st_dev, st.st_ino) in seen:
            continue
        seen.add((st.st_dev, st.st_ino))
        total += st.st_blocks * 512
        if current.is_dir() and not current.is_symlink():
            try:
                stack.extend(current.iterdir())
            except OSError:
                continue
    return total


def _layer_unit(rel: str) -> str:
    """The cache directory a layer path lives in: `layers/<id>/diff` -> `layers/<id>`."""
    parts = Path(rel).parts
    return "/".join(parts[:2])


def _is_base(unit: str) -> bool:
    return not unit.startswith("layers/")


@dataclass
class ImageEntry:
    """One built image in this server's images directory."""

    hash: str
    kind: str  # "venv" | "rootfs"
    path: Path
    created: float
    layers: tuple[str, ...] = ()  # cache units, base first (rootfs only)
    python_version: str | None = None
    users: list[dict[str, str]] = field(default_factory=list)


class ImageStore:
    """The images of one server (`images_dir`) and the layer cache they use."""

    def __init__(self, images_dir: Path, layer_cache: Path, *, shared_cache: bool) -> None:
        self.images_dir = Path(images_dir)
        self.cache = Path(layer_cache)
        self.shared_cache = shared_cache

    # -- reading ------------------------------------------------------------------------
    def entries(self, users: Users | None = None) -> list[ImageEntry]:
        """Every complete image, oldest first, with who uses it."""
        out: list[ImageEntry] = []
        try:
            names = sorted(os.listdir(self.images_dir))
        except FileNotFoundError:
            return out
        for name in names:
            entry = self._entry(name)
            if entry is not None:
                entry.users = list((users or {}).get(entry.hash, []))
                out.append(entry)
        out.sort(key=lambda e: (e.created, e.hash))
        return out

    def _entry(self, name: str) -> ImageEntry | None:
        if name.startswith("."):
            return None
        path = self.images_dir / name
        record = path / ROOTFS_RECORD
        marker = path / _OK
        try:
            if record.is_file():
                data = json.loads(record.read_text(encoding="utf-8"))
                units = tuple(dict.fromkeys(_layer_unit(rel) for rel in data["layers"]))
                return ImageEntry(name, "rootfs", path, record.stat().st_mtime, units)
            if marker.is_file():
                meta = json.loads(marker.read_text(encoding="utf-8") or "{}")
                version = meta.get("python_version") if isinstance(meta, dict) else None
                return ImageEntry(name, "venv", path, marker.stat().st_mtime, (), version)
        except (OSError, ValueError, KeyError, TypeError):
            return None  # damaged or half-written: not an image to list or count
        return None

    def resolve(self, prefix: str, entries: Iterable[ImageEntry]) -> ImageEntry:
        """The one image whose hash starts with `prefix`."""
        prefix = prefix.strip().lower()
        if len(prefix) < _MIN_PREFIX or not all(c in "0123456789abcdef" for c in prefix):
            raise InvalidError(
                f"{prefix!r} is not an image hash prefix: give at least {_MIN_PREFIX} hex "
                "digits of a hash `ketch image list` shows"
            )
        found = [e for e in entries if e.hash.startswith(prefix)]
        if not found:
            raise NotFoundError(f"no image's hash starts with {prefix!r}; see `ketch image list`")
        if len(found) > 1:
            names = ", ".join(e.hash[:16] for e in found[:5])
            raise InvalidError(
                f"{prefix!r} matches {len(found)} images ({names}); give more of the hash"
            )
        return found[0]

    def listing(self, users: Users | None = None) -> dict[str, Any]:
        """The images with their sizes: `size` is all an image takes (its layers, shared or
        not), `shared` the part of it other images use too; `total` counts each once."""
        entries = self.entries(users)
        holders: dict[str, int] = {}
        for e in entries:
            for unit in e.layers:
                holders[unit] = holders.get(unit, 0) + 1
        unit_size = {unit: disk_usage(self.cache / unit) for unit in holders}
        seen: set[tuple[int, int]] = set()
        total = 0
        rows = []
        for e in entries:
            own = disk_usage(e.path)
            size = own + sum(unit_size[u] for u in e.layers)
            shared = sum(unit_size[u] for u in e.layers if holders[u] > 1)
            total += disk_usage(e.path, seen)
            rows.append(
                {
                    "hash": e.hash,
                    "kind": e.kind,
                    "size": size,
                    "shared": shared,
                    "layers": len(e.layers),
                    "created": e.created,
                    "python_version": e.python_version,
                    "used_by": e.users,
                }
            )
        for unit in holders:
            total += disk_usage(self.cache / unit, seen)
        return {
            "images": rows,
            "total": total,
            "shared_layers": sum(1 for n in holders.values() if n > 1),
            "layer_cache": str(self.cache),
        }

    # -- removing -----------------------------------------------------------------------
    def remove(self, entry: ImageEntry, *, dry_run: bool = False) -> dict[str, Any]:
        """Remove one image and the layers of it no other image of this server names."""
        others = [e for e in self.entries() if e.hash != entry.hash]
        kept = {u for e in others for u in e.layers}
        units = [u for u in entry.layers if u not in kept and not _is_base(u)]
        return self._delete([entry], units, dry_run)

    def prune(self, users: Users, *, bases: bool = False, dry_run: bool = False) -> dict[str, Any]:
        """Remove every image nothing uses, the layers only they named, what killed builds
        left, and (in a cache of this server's own) layers no image names at all."""
        entries = self.entries(users)
        unused = [e for e in entries if not e.users]
        kept = {u for e in entries if e.users for u in e.layers}
        units = list(dict.fromkeys(u for e in unused for u in e.layers if u not in kept))
        unrecorded = self._unrecorded({u for e in entries for u in e.layers})
        if not self.shared_cache:
            units += unrecorded
        if not bases:
            units = [u for u in units if not _is_base(u)]
        result = self._delete(unused, units, dry_run, leftovers=True)
        result["unrecorded_kept"] = len(unrecorded) if self.shared_cache else 0
        return result

    def _unrecorded(self, recorded: set[str]) -> list[str]:
        out = []
        for kind in ("layers", "bases", "registry"):
            try:
                names = sorted(os.listdir(self.cache / kind))
            except FileNotFoundError:
                continue
            for name in names:
                unit = f"{kind}/{name}"
                if (
                    (self.cache / unit).is_dir()
                    and not name.startswith(".")
                    and unit not in recorded
                ):
                    out.append(unit)
        return out

    def _leftovers(self) -> list[Path]:
        try:
            names = os.listdir(self.images_dir)
        except FileNotFoundError:
            return []
        return [
            self.images_dir / n
            for n in sorted(names)
            if n.startswith(_LEFTOVER_PREFIXES) or (n.startswith(".") and _LEFTOVER_MARK in n)
        ]

    def _delete(
        self,
        images: list[ImageEntry],
        units: list[str],
        dry_run: bool,
        *,
        leftovers: bool = False,
    ) -> dict[str, Any]:
        seen: set[tuple[int, int]] = set()
        extra = self._leftovers() if leftovers else []
        freed = sum(disk_usage(p, seen) for p in [*(e.path for e in images), *extra])
        freed += sum(disk_usage(self.cache / u, seen) for u in units)
        if not dry_run:
            for path in [*(e.path for e in images), *extra]:
                _remove_tree(path)
            for unit in units:
                _remove_tree(self.cache / unit)
        return {
            "images": [{"hash": e.hash, "kind": e.kind} for e in images],
            "layers": units,
            "leftovers": len(extra),
            "freed": freed,
            "dry_run": dry_run,
        }


def _remove_tree(path: Path) -> None:
    """Delete `path` so that no reader sees it half gone: renamed first (a build checks for
    the name's `.ok`), then deleted."""
    if not path.exists():
        return
    trash = path.with_name(f".{path.name}.old-rm")
    shutil.rmtree(trash, ignore_errors=True)
    try:
        os.rename(path, trash)
    except OSError:
        trash = path
    shutil.rmtree(trash, ignore_errors=True)
