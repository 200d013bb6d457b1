"""Volumes on the server: named directories under the state directory, their records, and
the file operations the SDK and CLI reach through the management API.

A volume is the directory `<home>/volumes/<environment>/<volume_id>/`. Containers get it
bind-mounted at their mount path (see `_backends/mounts.py`), so what one container writes
is on disk, and visible to every other container and to the API, at once.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import stat
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from ketch._server.store import Store
from ketch._utils.ids import new_id
from ketch._utils.volume_paths import check_mount_path, check_mount_set
from ketch.exception import AlreadyExistsError, InvalidError, NotFoundError

if TYPE_CHECKING:
    from ketch._utils.protocol.spec import StoredVolume

# Entry types, numbered as Modal's FileEntryType.
FILE, DIRECTORY, SYMLINK, FIFO, SOCKET = 1, 2, 3, 4, 5


@dataclass(frozen=True)
class VolumeRecord:
    volume_id: str
    environment: str
    name: str | None  # None for ephemeral volumes
    created: float

    def as_dict(self) -> dict[str, Any]:
        return {
            "volume_id": self.volume_id,
            "environment": self.environment,
            "name": self.name,
            "created": self.created,
        }


class VolumeManager:
    """Volume records (SQLite) and their directories."""

    def __init__(self, home: Path, store: Store) -> None:
        self.store = store
        self.root = home / "volumes"
        self.staging = self.root / ".staging"  # uploads in progress (same filesystem)
        self.trash = self.root / ".trash"  # deleted volumes, until removed
        for path in (self.staging, self.trash):
            # Left over from a server that died mid-upload or mid-delete.
            shutil.rmtree(path, ignore_errors=True)
            path.mkdir(parents=True, exist_ok=True)

    # -- records ------------------------------------------------------------------------
    def _row(self, where: str, args: tuple[Any, ...]) -> VolumeRecord | None:
        with self.store.tx() as db:
            row = db.execute(
                f"SELECT volume_id, environment, name, created FROM volumes WHERE {where}", args
            ).fetchone()
        return None if row is None else VolumeRecord(*row)

    def get(self, volume_id: str) -> VolumeRecord:
        rec = self._row("volume_id = ?", (volume_id,))
        if rec is None:
            raise NotFoundError(f"volume {volume_id!r} does not exist (it may have been deleted)")
        return rec

    def find(self, environment: str, name: str) -> VolumeRecord | None:
        return self._row("environment = ? AND name = ?", (environment, name))

    def lookup(self, environment: str, name: str, *, create_if_missing: bool) -> VolumeRecord:
        check_names(name, environment)
        rec = self.find(environment, name)
        if rec is not None:
            return rec
        if not create_if_missing:
            raise NotFoundError(
                f"volume {name!r} not found in environment {environment!r}; create it with "
                f"`ketch volume create {name}` or Volume.from_name(..., create_if_missing=True)"
            )
        return self._insert(environment, name, exist_ok=True)

    def create(self, environment: str, name: str) -> VolumeRecord:
        check_names(name, environment)
        return self._insert(environment, name, exist_ok=False)

    def create_ephemeral(self, environment: str) -> VolumeRecord:
        check_names(None, environment)
        return self._insert(environment, None, exist_ok=False)

    def _insert(self, environment: str, name: str | None, *, exist_ok: bool) -> VolumeRecord:
        vid = new_id("vo")
        path = self.root / environment / vid
        # The directory first: a record must never point at nothing, while an orphaned
        # empty directory (a crash between the two steps) is harmless.
        path.mkdir(parents=True)
        now = time.time()
        with self.store.tx() as db:
            if name is not None:
                row = db.execute(
                    "SELECT volume_id, environment, name, created FROM volumes"
                    " WHERE environment = ? AND name = ?",
                    (environment, name),
                ).fetchone()
                if row is not None:
                    path.rmdir()
                    if exist_ok:
                        return VolumeRecord(*row)
                    raise AlreadyExistsError(
                        f"volume {name!r} already exists in environment {environment!r}"
                    )
            db.execute("INSERT INTO volumes VALUES (?, ?, ?, ?)", (vid, environment, name, now))
        return VolumeRecord(vid, environment, name, now)

    def list_named(self, environment: str) -> list[dict[str, Any]]:
        with self.store.tx() as db:
            rows = db.execute(
                "SELECT volume_id, environment, name, created FROM volumes"
                " WHERE environment = ? AND name IS NOT NULL ORDER BY name",
                (environment,),
            ).fetchall()
        return [VolumeRecord(*r).as_dict() for r in rows]

    def delete(self, rec: VolumeRecord) -> Path:
        """Forget the volume and move its files out of sight (one rename); returns where
        they went, for `purge` (slow, so the caller runs it off the loop). Containers that
        have it mounted keep an empty directory; new containers of functions that use it
        fail to start, naming it."""
        with self.store.tx() as db:
            db.execute("DELETE FROM volumes WHERE volume_id = ?", (rec.volume_id,))
        gone = self.trash / f"{rec.volume_id}-{time.monotonic_ns()}"
        with contextlib.suppress(FileNotFoundError):
            self.path(rec).rename(gone)
        return gone

    @staticmethod
    def purge(path: Path) -> None:
        shutil.rmtree(path, ignore_errors=True)

    def path(self, rec: VolumeRecord) -> Path:
        return self.root / rec.environment / rec.volume_id

    def live_path(self, volume_id: str) -> Path:
        """The directory of an existing volume (NotFoundError otherwise)."""
        path = self.path(self.get(volume_id))
        if not path.is_dir():
            raise NotFoundError(f"the files of volume {volume_id!r} are missing from {path}")
        return path

    # -- functions that mount volumes ---------------------------------------------------
    def attach(
        self, environment: str, functions: dict[str, dict[str, Any]], forbidden: list[Path]
    ) -> None:
        """Check every function's volume references at deploy time and store them resolved
        (`{"mount", "volume_id", "name", "environment"}`) in its spec.

        All references are checked before any volume is created (for create_if_missing),
        so a deploy refused for a missing volume leaves nothing behind."""
        for create in (False, True):
            for tag, fspec in functions.items():
                entries = fspec.get("volumes") or []
                if not isinstance(entries, list):
                    raise InvalidError(f"{tag}: volumes must be a list of mounts")
                resolved = [self._resolve(environment, e, forbidden, create) for e in entries]
                check_mount_set([e["mount"] for e in resolved])
                if create:
                    fspec["volumes"] = resolved

    def _resolve(
        self, environment: str, entry: dict[str, Any], forbidden: list[Path], create: bool
    ) -> dict[str, Any]:
        mount = check_mount_path(entry.get("mount"))
        for path in forbidden:
            if (
                PurePosixPath(mount) == PurePosixPath(path)
                or PurePosixPath(mount) in PurePosixPath(path).parents
            ):
                raise InvalidError(
                    f"volumes: mounting at {mount!r} would hide {path}, which containers "
                    "need; choose another mount path"
                )
        if entry.get("volume_id"):
            rec = self.get(str(entry["volume_id"]))
        else:
            env = entry.get("environment") or environment
            name = str(entry.get("name"))
            check_names(name, env)
            found = self.find(env, name)
            if found is None and not (create and entry.get("create_if_missing")):
                if entry.get("create_if_missing"):
                    return {"mount": mount}  # created in the second pass
                raise NotFoundError(
                    f"volume {name!r} not found in environment {env!r}; create it with "
                    f"`ketch volume create {name}` or Volume.from_name(..., "
                    "create_if_missing=True)"
                )
            rec = found or self.lookup(env, name, create_if_missing=True)
        return {
            "mount": mount,
            "volume_id": rec.volume_id,
            "name": rec.name,
            "environment": rec.environment,
        }

    def host_mounts(self, entries: Sequence[StoredVolume]) -> dict[str, str]:
        """Mount path -> host directory for a function's stored volume references."""
        return {e.mount: str(self.root / e.environment / e.volume_id) for e in entries}


def check_names(name: str | None, environment: str) -> None:
    from ketch._utils.labels import validate_name

    if name is not None:
        validate_name("volume", name)
    validate_name("environment", environment)


def container_mounts(volumes: dict[str, str], entries: Sequence[StoredVolume]) -> dict[str, str]:
    """At container start: the mounts to make, after checking that every volume is still
    there. Raises NotFoundError naming the first one that is gone."""
    names = {e.mount: e.name or e.volume_id for e in entries}
    for mount, host in volumes.items():
        if not os.path.isdir(host):
            raise NotFoundError(
                f"volume {names.get(mount, host)!r} (mounted at {mount}) has been deleted; "
                "create it again and redeploy, or remove it from volumes="
            )
    return dict(volumes)


# -- files inside a volume -----------------------------------------------------------------
def volume_path(root: Path, path: str, *, allow_root: bool = True) -> Path:
    """`path` (relative to the volume, a leading '/' allowed) inside `root`.

    Refuses '..', NUL and anything whose existing part resolves outside the volume through
    a symlink (which a container may have planted), so the API never reads or writes
    outside the volume's directory."""
    if not isinstance(path, str) or "\0" in path:
        raise InvalidError(f"invalid volume path {path!r}")
    rel = PurePosixPath("/" + path.strip())
    if ".." in rel.parts:
        raise InvalidError(f"volume path {path!r} may not contain '..'")
    parts = rel.parts[1:]
    if not parts and not allow_root:
        raise InvalidError("this needs a path inside the volume, not its root")
    target = root.joinpath(*parts)
    # Check the parent's real location: the final component itself may be a symlink the
    # caller means (listing or removing it), and it is never followed by the writers.
    real_root = os.path.realpath(root)
    real_parent = os.path.realpath(target.parent) if parts else real_root
    if os.path.commonpath([real_root, real_parent]) != real_root:
        raise InvalidError(f"volume path {path!r} leads outside the volume (through a symlink)")
    return target


def _inside(root: Path, target: Path) -> bool:
    real_root = os.path.realpath(root)
    return os.path.commonpath([real_root, os.path.realpath(target)]) == real_root


def _entry(root: Path, path: Path, st: os.stat_result) -> dict[str, Any]:
    mode = st.st_mode
    kind = (
        DIRECTORY
        if stat.S_ISDIR(mode)
        else SYMLINK
        if stat.S_ISLNK(mode)
        else FIFO
        if stat.S_ISFIFO(mode)
        else SOCKET
        if stat.S_ISSOCK(mode)
        else FILE
    )
    return {
        "path": path.relative_to(root).as_posix(),
        "type": kind,
        "size": st.st_size if kind == FILE else 0,
        "mtime": int(st.st_mtime),
    }


def list_entries(root: Path, path: str, recursive: bool) -> list[dict[str, Any]]:
    """Entries at `path`: its children (all descendants when `recursive`), or the file
    itself. Symlinks are reported, never followed."""
    target = volume_path(root, path)
    try:
        st = target.lstat()
    except FileNotFoundError:
        raise FileNotFoundError(f"no such file or directory in the volume: {path!r}") from None
    if not stat.S_ISDIR(st.st_mode):
        return [_entry(root, target, st)]
    out: list[dict[str, Any]] = []
    stack = [target]
    while stack:
        current = stack.pop()
        try:
            children = sorted(os.scandir(current), key=lambda e: e.name)
        except (FileNotFoundError, NotADirectoryError):
            continue  # removed while we looked
        for child in children:
            try:
                cst = child.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue
            out.append(_entry(root, Path(child.path), cst))
            if recursive and stat.S_ISDIR(cst.st_mode):
                stack.append(Path(child.path))
    return out


def open_for_read(root: Path, path: str) -> tuple[int, int]:
    """(open fd, size) of a regular file in the volume."""
    target = volume_path(root, path, allow_root=False)
    if not _inside(root, target):
        raise InvalidError(f"volume path {path!r} leads outside the volume (through a symlink)")
    try:
        fd = os.open(os.path.realpath(target), os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        raise FileNotFoundError(f"no such file in the volume: {path!r}") from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise IsADirectoryError(f"{path!r} in the volume is not a regular file")
    return fd, st.st_size


def read_chunks(fd: int, chunk: int = 2**20) -> Iterator[bytes]:
    try:
        while data := os.read(fd, chunk):
            yield data
    finally:
        os.close(fd)


def existing(root: Path, paths: list[str]) -> list[str]:
    """Which of `paths` already exist in the volume."""
    return [p for p in paths if volume_path(root, p, allow_root=False).exists()]


class Upload:
    """One file being written into a volume: bytes go to a staging file, which replaces the
    target in one step when complete, so a reader never sees half a file."""

    def __init__(
        self, root: Path, staging: Path, path: str, *, force: bool, mode: int | None = None
    ) -> None:
        self.target = volume_path(root, path, allow_root=False)
        self.root = root
        self.path = path
        self.force = force
        self.mode = mode
        self._check()
        self.tmp = staging / new_id("up")
        self._fh = self.tmp.open("wb")
        self.size = 0

    def _check(self) -> None:
        if self.target.is_dir() and not self.target.is_symlink():
            raise IsADirectoryError(f"{self.path!r} is a directory in the volume")
        if not self.force and os.path.lexists(self.target):
            raise FileExistsError(
                f"{self.path!r} already exists in the volume; pass force=True to replace it"
            )

    def write(self, data: bytes) -> None:
        self._fh.write(data)
        self.size += len(data)

    def finish(self) -> int:
        """Put the file in place; on any failure the staging file is removed."""
        try:
            return self._finish()
        except BaseException:
            self.abort()
            raise

    def _finish(self) -> int:
        self._fh.close()
        parent = self.target.parent
        # The parent may have been swapped for a symlink since the first check.
        self.target = volume_path(self.root, self.path, allow_root=False)
        try:
            parent.mkdir(parents=True, exist_ok=True)
        except (FileExistsError, NotADirectoryError):
            raise NotADirectoryError(
                f"cannot write {self.path!r}: a file stands where a directory is needed"
            ) from None
        self._check()
        if self.mode is not None:
            os.chmod(self.tmp, self.mode & 0o7777)
        else:
            os.chmod(self.tmp, 0o644)
        os.replace(self.tmp, self.target)
        return self.size

    def abort(self) -> None:
        with contextlib.suppress(OSError):
            self._fh.close()
        self.tmp.unlink(missing_ok=True)


def remove(root: Path, path: str, recursive: bool) -> None:
    target = volume_path(root, path, allow_root=False)
    if not os.path.lexists(target):
        raise FileNotFoundError(f"no such file or directory in the volume: {path!r}")
    if target.is_dir() and not target.is_symlink():
        if not recursive:
            raise InvalidError(f"{path!r} is a directory; pass recursive=True (-r) to remove it")
        shutil.rmtree(target)
    else:
        target.unlink()


def copy(root: Path, sources: list[str], dest: str, recursive: bool) -> None:
    """Copy files (directories with `recursive`) within the volume. Into `dest` when it is
    an existing directory or there are several sources, else to `dest` itself."""
    if not sources:
        raise InvalidError("copy_files needs at least one source path")
    dst = volume_path(root, dest)
    into = (dst.is_dir() and not dst.is_symlink()) or len(sources) > 1
    if into and not dst.is_dir():
        raise NotADirectoryError(f"{dest!r} must be an existing directory to copy several files")
    for src_text in sources:
        src = volume_path(root, src_text, allow_root=False)
        if not os.path.lexists(src):
            raise FileNotFoundError(f"no such file or directory in the volume: {src_text!r}")
        target = dst / src.name if into else dst
        if src.is_dir() and not src.is_symlink():
            if not recursive:
                raise InvalidError(f"{src_text!r} is a directory; pass recursive=True")
            if target == src or src in target.parents:
                raise InvalidError(f"cannot copy {src_text!r} into itself")
            # Links are copied as links, so nothing outside the volume is pulled in.
            shutil.copytree(src, target, symlinks=True, dirs_exist_ok=True)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, target, follow_symlinks=False)


def syncfs(path: Path) -> None:
    """Flush the filesystem holding `path` to disk (commit's durability on this host)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            if libc.syncfs(fd) == 0:
                return
        except (OSError, AttributeError):
            pass
        os.sync()
    finally:
        os.close(fd)
