"""Build contexts: which local files a COPY/ADD takes, their content hashes, and the archive
that carries them into a layer.

The SDK hashes a Dockerfile's sources when the image is defined (so a changed file changes
the image's hash); the builder resolves the same sources again, keys the layer by what it
finds, and checks that nothing changed in between.
"""

from __future__ import annotations

import glob
import hashlib
import io
import os
import posixpath
import stat
import tarfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO

from ketch._images.dockerfile import Copy, Instruction
from ketch.exception import InvalidError
from ketch.image import iter_local_files

__all__ = [
    "CopyPlan",
    "Entry",
    "context_digest",
    "local_entry_plan",
    "resolve_copy",
    "write_archive",
]

_CHUNK = 1 << 20
_GLOB_CHARS = frozenset("*?[")


@dataclass(frozen=True)
class Entry:
    """One path a COPY creates: `rel` under the destination directory, from `source`."""

    rel: str
    kind: str  # "file", "dir" or "link"
    source: Path


@dataclass(frozen=True)
class CopyPlan:
    """What one COPY/ADD does: entries written under `dest_dir` (absolute, in the image),
    and (ADD) local archives unpacked there."""

    dest_dir: str
    entries: tuple[Entry, ...]
    archives: tuple[Path, ...] = ()
    chown: str | None = None
    chmod: str | None = None
    # Set for one file copied to a path: the name it gets there (see resolve_copy).
    rename: str | None = None

    def digest(self) -> str:
        """sha256 of everything the plan writes: paths, kinds, modes and contents."""
        h = hashlib.sha256(f"{self.dest_dir}\0{self.rename or ''}".encode())
        for line in _entry_lines(self.entries):
            h.update(line)
        for archive in self.archives:
            h.update(b"archive\0" + _file_digest(archive) + b"\n")
        return h.hexdigest()


def _file_digest(path: Path, sink: BinaryIO | None = None) -> bytes:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
            if sink is not None:
                sink.write(chunk)
    return h.digest()


def _entry_line(entry: Entry, content: bytes) -> bytes:
    st = entry.source.lstat()
    mode = stat.S_IMODE(st.st_mode)
    return f"{entry.rel}\0{entry.kind}\0{mode:o}\0".encode() + content + b"\n"


def _entry_lines(entries: Iterable[Entry]) -> Iterator[bytes]:
    for entry in entries:
        if entry.kind == "file":
            yield _entry_line(entry, _file_digest(entry.source))
        elif entry.kind == "link":
            yield _entry_line(entry, os.readlink(entry.source).encode())
        else:
            yield _entry_line(entry, b"")


def _walk(root: Path) -> list[Entry]:
    """Everything under `root` as Docker copies it: hidden files too, symlinks as symlinks."""
    out: list[Entry] = []
    for dirpath, dirnames, filenames in os.walk(root):
        base = Path(dirpath)
        rel_dir = base.relative_to(root).as_posix()
        for name in sorted(dirnames):
            path = base / name
            rel = name if rel_dir == "." else f"{rel_dir}/{name}"
            out.append(Entry(rel, "link" if path.is_symlink() else "dir", path))
        for name in sorted(filenames):
            path = base / name
            rel = name if rel_dir == "." else f"{rel_dir}/{name}"
            out.append(Entry(rel, "link" if path.is_symlink() else "file", path))
        dirnames[:] = sorted(d for d in dirnames if not (base / d).is_symlink())
    out.sort(key=lambda e: e.rel)
    return out


def _sources(instr: Copy, context: Path, where: str) -> list[Path]:
    """The context paths one COPY/ADD names, globs expanded, never outside the context."""
    found: list[Path] = []
    root = context.resolve()
    for src in instr.sources:
        # Docker reads an absolute source as relative to the context, and so does ketch.
        rel = posixpath.normpath(src.lstrip("/") or ".")
        if rel == ".." or rel.startswith("../"):
            raise InvalidError(
                f"{where}: {instr.keyword} source {src!r} is outside the build context"
            )
        if _GLOB_CHARS & set(rel):
            matches = sorted(glob.glob(glob.escape(str(root)) + "/" + rel))
            if not matches:
                raise InvalidError(
                    f"{where}: {instr.keyword} source {src!r} matches no files in {root}"
                )
            found.extend(Path(m) for m in matches)
            continue
        path = root / rel
        if not path.exists() and not path.is_symlink():
            raise InvalidError(f"{where}: {instr.keyword} source {src!r} not found in {root}")
        found.append(path)
    for path in found:
        real = path.resolve()
        if real != root and root not in real.parents:
            raise InvalidError(
                f"{where}: {instr.keyword} source {path} leads outside the build context {root}"
            )
    return found


def resolve_copy(instr: Copy, context: Path | None, workdir: str | None, where: str) -> CopyPlan:
    """Apply Docker's COPY/ADD rules to the files in `context` as they are now."""
    if context is None:
        raise InvalidError(f"{where}: {instr.keyword} needs a build context (pass context_dir=)")
    sources = _sources(instr, context, where)
    dest = instr.dest
    if not dest.startswith("/"):
        dest = posixpath.join(workdir or "/", dest)
    into_dir = (
        dest.endswith(("/", "/.", "/..")) or len(sources) > 1 or any(p.is_dir() for p in sources)
    )
    if len(sources) > 1 and not instr.dest.endswith("/"):
        raise InvalidError(
            f"{where}: {instr.keyword} with more than one source needs a destination "
            f"ending in / (got {instr.dest!r})"
        )
    norm = posixpath.normpath(dest)
    entries: list[Entry] = []
    archives: list[Path] = []
    for path in sources:
        if path.is_dir() and not path.is_symlink():
            entries.extend(_walk(path))
        elif instr.add and path.is_file() and tarfile.is_tarfile(path):
            archives.append(path)  # ADD unpacks local archives, as Docker does
            into_dir = True
        else:
            # A source that is a symlink is copied as what it points to, as in Docker.
            entries.append(Entry(path.name, "file", path.resolve()))
    if into_dir:
        return CopyPlan(norm, _dedup(entries), tuple(archives), instr.chown, instr.chmod)
    # One file to a path: the file's new name, unless the path is a directory in the image
    # (known only at build time), where Docker puts the file under its own name.
    return CopyPlan(
        posixpath.dirname(norm),
        tuple(entries),
        chown=instr.chown,
        chmod=instr.chmod,
        rename=posixpath.basename(norm),
    )


def _dedup(entries: Sequence[Entry]) -> tuple[Entry, ...]:
    # Two globbed directories may both hold a path; the later one wins, as when copying.
    by_rel = {e.rel: e for e in entries}
    return tuple(sorted(by_rel.values(), key=lambda e: e.rel))


def local_entry_plan(entry: Mapping[str, Any]) -> CopyPlan:
    """An `add_local_file`/`add_local_dir(copy=True)` entry of an image spec, as a COPY."""
    remote = PurePosixPath(entry["remote_path"])
    if not remote.is_absolute() or ".." in remote.parts:
        raise InvalidError(f"invalid remote path in image spec: {entry['remote_path']!r}")
    src = Path(entry["local_path"])
    if entry["kind"] == "file":
        return CopyPlan(str(remote.parent), (Entry(remote.name, "file", src),))
    files = [
        Entry(rel, "file", path) for rel, path in iter_local_files(src, entry.get("ignore", ()))
    ]
    return CopyPlan(str(remote), tuple(files))


def context_digest(
    instructions: Iterable[Instruction], context: Path | None, where: str
) -> str | None:
    """sha256 of every context file the instructions copy (None when none copy anything)."""
    copies = [i for i in instructions if isinstance(i, Copy)]
    if not copies:
        return None
    if context is None:
        raise InvalidError(f"{where}: COPY/ADD needs a build context (pass context_dir=)")
    root = context.resolve()
    seen: dict[str, Entry] = {}
    for instr in copies:
        for path in _sources(instr, root, where):
            rel = path.relative_to(root).as_posix() if path != root else "."
            if path.is_dir() and not path.is_symlink():
                for e in _walk(path):
                    seen[posixpath.normpath(f"{rel}/{e.rel}")] = e
            else:
                seen[rel] = Entry(rel, "link" if path.is_symlink() else "file", path)
    h = hashlib.sha256()
    for rel in sorted(seen):
        e = seen[rel]
        h.update(b"".join(_entry_lines([Entry(rel, e.kind, e.source)])))
    return h.hexdigest()


class _Hashing(io.RawIOBase):
    """A file wrapper that hashes what tarfile reads from it."""

    def __init__(self, f: BinaryIO) -> None:
        self.f = f
        self.h = hashlib.sha256()

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        data = self.f.read(len(b))
        self.h.update(data)
        b[: len(data)] = data
        return len(data)


def write_archive(plan: CopyPlan, out: Path) -> tuple[str, list[tuple[str, bytes]]]:
    """Write the plan's entries as a tar (owned by root) to `out`.

    Returns the plan's digest over what was actually read, and (rel, sha256) per file, so a
    file changed since the layer was keyed is caught rather than built under a stale key.
    """
    h = hashlib.sha256(f"{plan.dest_dir}\0{plan.rename or ''}".encode())
    files: list[tuple[str, bytes]] = []
    with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as tar:
        for entry in plan.entries:
            info = tar.gettarinfo(str(entry.source), arcname=entry.rel)
            if entry.kind == "file" and not info.isfile():
                info = tar.gettarinfo(str(entry.source.resolve()), arcname=entry.rel)
            info.uid = info.gid = 0
            info.uname = info.gname = "root"
            if info.isfile():
                with entry.source.open("rb") as f:
                    reader = _Hashing(f)
                    tar.addfile(info, io.BufferedReader(reader))
                digest = reader.h.digest()
                files.append((entry.rel, digest))
                h.update(_entry_line(entry, digest))
            elif info.issym():
                tar.addfile(info)
                h.update(_entry_line(entry, info.linkname.encode()))
            else:
                tar.addfile(info)
                h.update(_entry_line(entry, b""))
    for archive in plan.archives:
        h.update(b"archive\0" + _file_digest(archive) + b"\n")
    return h.hexdigest(), files
