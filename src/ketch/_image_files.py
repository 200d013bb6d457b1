"""Which local files an image's add_local_* steps take, and their content hashes."""

from __future__ import annotations

import fnmatch
import hashlib
import importlib.util
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from ketch.exception import InvalidError

__all__ = [
    "LocalFiles",
    "check_remote_path",
    "hash_file",
    "hash_file_set",
    "hash_local_entry",
    "iter_local_files",
    "resolve_python_source",
]

_ALWAYS_SKIPPED_DIRS = frozenset({"__pycache__"})
_ALWAYS_SKIPPED_SUFFIXES = (".pyc",)
_HASH_CHUNK = 1 << 20


@dataclass(frozen=True)
class LocalFiles:
    local_path: str
    remote_path: str
    is_dir: bool
    copy: bool
    ignore: tuple[str, ...]
    python_module: str | None


def check_remote_path(remote_path: object, method: str) -> str:
    if not isinstance(remote_path, str) or not remote_path:
        raise InvalidError(f"Image.{method}: remote_path must be a non-empty string")
    pure = PurePosixPath(remote_path)
    if not pure.is_absolute():
        raise InvalidError(
            f"Image.{method}: remote_path must be absolute (start with '/'), got {remote_path!r}"
        )
    if ".." in pure.parts:
        raise InvalidError(f"Image.{method}: remote_path may not contain '..': {remote_path!r}")
    return remote_path


def _is_ignored(rel_parts: Sequence[str], patterns: Sequence[str]) -> bool:
    # A pattern matches a relative path, or (when it has no '/') any single path component;
    # a match on a directory excludes everything under it.
    for i, name in enumerate(rel_parts):
        prefix = "/".join(rel_parts[: i + 1])
        for pattern in patterns:
            pat = pattern.strip("/")
            if fnmatch.fnmatchcase(prefix, pat):
                return True
            if "/" not in pat and fnmatch.fnmatchcase(name, pat):
                return True
    return False


def iter_local_files(root: Path, ignore: Sequence[str] = ()) -> Iterator[tuple[str, Path]]:
    """Yield (relative posix path, absolute path) for every file under `root`, sorted.

    Skips `__pycache__` directories, `.pyc` files and anything matching an `ignore`
    glob. The image hash and the builder both use this, so they always agree on the set.
    """
    found: list[tuple[str, Path]] = []
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = Path(dirpath).relative_to(root).parts
        dirnames[:] = [
            d
            for d in dirnames
            if d not in _ALWAYS_SKIPPED_DIRS and not _is_ignored((*rel_dir, d), ignore)
        ]
        for name in filenames:
            if name.endswith(_ALWAYS_SKIPPED_SUFFIXES):
                continue
            parts = (*rel_dir, name)
            if _is_ignored(parts, ignore):
                continue
            found.append(("/".join(parts), Path(dirpath, name)))
    found.sort(key=lambda item: item[0])
    yield from found


def _file_digest(path: Path) -> bytes:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_HASH_CHUNK):
            h.update(chunk)
    return h.digest()


def hash_file(path: Path) -> str:
    """Return the sha256 hex of a file's bytes."""
    return _file_digest(path).hex()


def hash_file_set(files: Iterable[tuple[str, Path]]) -> str:
    """Return the sha256 hex of (relative path, file) pairs, taken in the order given."""
    h = hashlib.sha256()
    for rel, abs_path in files:
        # Hash each file's digest rather than its raw bytes, so that path/content
        # boundaries are unambiguous.
        h.update(rel.encode("utf-8"))
        h.update(b"\0")
        h.update(_file_digest(abs_path))
    return h.hexdigest()


def hash_local_entry(path: Path, is_dir: bool, ignore: Sequence[str] = ()) -> str:
    """Return the sha256 hex of a file's bytes, or of a directory's sorted paths and contents."""
    if not is_dir:
        return hash_file(path)
    return hash_file_set(iter_local_files(path, ignore))


def resolve_python_source(module_name: str, copy: bool) -> LocalFiles:
    if not module_name or not all(part.isidentifier() for part in module_name.split(".")):
        raise InvalidError(f"Image.add_local_python_source: {module_name!r} is not a module name")
    try:
        found = importlib.util.find_spec(module_name)
    except (ImportError, ValueError) as exc:
        raise InvalidError(
            f"Image.add_local_python_source: cannot find module {module_name!r}: {exc}"
        ) from exc
    if found is None:
        raise InvalidError(
            f"Image.add_local_python_source: module {module_name!r} not found on this "
            "machine's import path"
        )
    remote_base = "/root/" + module_name.replace(".", "/")
    locations = list(found.submodule_search_locations or [])
    if locations:
        if len(locations) != 1:
            raise InvalidError(
                f"Image.add_local_python_source: {module_name!r} is a namespace package spread "
                f"over {len(locations)} directories; add them with add_local_dir instead"
            )
        return LocalFiles(
            str(Path(locations[0]).resolve()), remote_base, True, copy, (), module_name
        )
    origin = found.origin
    if not found.has_location or origin is None or not origin.endswith(".py"):
        raise InvalidError(
            f"Image.add_local_python_source: {module_name!r} is not Python source on disk "
            f"(origin: {origin!r})"
        )
    return LocalFiles(
        str(Path(origin).resolve()), remote_base + ".py", False, copy, (), module_name
    )
