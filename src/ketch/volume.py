"""`Volume`: a persistent directory that functions mount and clients read and write.

On the local backend a volume is one directory on the server's host, bind-mounted into
each container that declares it: a write is visible to every container and client at
once. `commit()` flushes the volume's filesystem to disk and `reload()` checks that the
volume still exists; both are kept so that Modal code, which needs them, runs unchanged.
"""

from __future__ import annotations

import asyncio
import enum
import os
import stat
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Any, TypeVar

from ketch._client import volume_api
from ketch._utils.aio import Aio, aio_iter_method, aio_method, run_async, run_sync
from ketch._utils.labels import validate_name
from ketch._utils.volume_paths import check_mount_path, check_mount_set
from ketch.exception import InvalidError

__all__ = ["FileEntry", "FileEntryType", "Volume"]

T = TypeVar("T")


class FileEntryType(enum.IntEnum):
    UNSPECIFIED = 0
    FILE = 1
    DIRECTORY = 2
    SYMLINK = 3
    FIFO = 4
    SOCKET = 5


@dataclass(frozen=True)
class FileEntry:
    """One entry of `Volume.listdir`: its path from the volume's root, type, mtime, size."""

    path: str
    type: FileEntryType
    mtime: int
    size: int

    @classmethod
    def _from(cls, d: Mapping[str, Any]) -> FileEntry:
        return cls(
            path=str(d["path"]),
            type=FileEntryType(int(d["type"])),
            mtime=int(d["mtime"]),
            size=int(d["size"]),
        )


def _environment(name: str | None) -> str:
    if name is not None:
        return validate_name("environment", name)
    from ketch.config import Config

    return Config.load().environment


class _Both:
    """A factory usable as `x(...)` (blocking) and `x.aio(...)` returning one object that
    works with `with` and `async with` (batch_upload, ephemeral)."""

    def __init__(self, make: Callable[..., Any]) -> None:
        self._make = make

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._make(*args, **kwargs)

    def aio(self, *args: Any, **kwargs: Any) -> Any:
        return self._make(*args, **kwargs)


class Volume:
    """A persistent directory shared by functions (`volumes={"/data": vol}`) and clients.

    Create handles with `Volume.from_name(...)` or `Volume.ephemeral()`; every method has an
    `.aio` form for async code.
    """

    _name: str | None
    _environment: str | None
    _create_if_missing: bool
    _volume_id: str | None

    def __init__(self) -> None:
        raise InvalidError("create a Volume with Volume.from_name(...) or Volume.ephemeral()")

    @classmethod
    def _new(
        cls,
        name: str | None,
        environment: str | None,
        create_if_missing: bool,
        volume_id: str | None = None,
    ) -> Volume:
        obj = object.__new__(cls)
        obj._name = name
        obj._environment = environment
        obj._create_if_missing = create_if_missing
        obj._volume_id = volume_id
        obj._bind()
        return obj

    def _bind(self) -> None:
        self.batch_upload = _Both(self._batch_upload)

    def __getstate__(self) -> dict[str, Any]:
        return {
            "name": self._name,
            "environment": self._environment,
            "create_if_missing": self._create_if_missing,
            "volume_id": self._volume_id,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._name = state["name"]
        self._environment = state["environment"]
        self._create_if_missing = state["create_if_missing"]
        self._volume_id = state["volume_id"]
        self._bind()

    # -- construction -------------------------------------------------------------------
    @staticmethod
    def from_name(
        name: str, *, environment_name: str | None = None, create_if_missing: bool = False
    ) -> Volume:
        """A handle to the named volume. Nothing is looked up until first use (or deploy);
        then a missing volume raises NotFoundError unless `create_if_missing`."""
        validate_name("volume", name)
        if environment_name is not None:
            validate_name("environment", environment_name)
        return Volume._new(name, environment_name, bool(create_if_missing))

    # `with Volume.ephemeral() as vol:` / `async with Volume.ephemeral.aio() as vol:`
    ephemeral: _Both  # set below the class
    # `Volume.delete(name, environment_name=None)`, and `.aio`
    delete: Aio[..., None]

    # -- identity -----------------------------------------------------------------------
    @property
    def name(self) -> str | None:
        return self._name

    @property
    def object_id(self) -> str:
        if self._volume_id is None:
            self.hydrate()
        assert self._volume_id is not None
        return self._volume_id

    def __repr__(self) -> str:
        if self._name is None:
            return f"Volume.ephemeral({self._volume_id})"
        env = f", environment_name={self._environment!r}" if self._environment else ""
        return f"Volume.from_name({self._name!r}{env})"

    async def _hydrate(self) -> Volume:
        if self._volume_id is None:
            rec = await volume_api.call(
                "POST",
                "/v1/volumes/lookup",
                json={
                    "name": self._name,
                    "environment": _environment(self._environment),
                    "create_if_missing": self._create_if_missing,
                },
            )
            self._volume_id = str(rec["volume_id"])
        return self

    async def _vid(self) -> str:
        await self._hydrate()
        assert self._volume_id is not None
        return self._volume_id

    def _spec(self) -> dict[str, Any]:
        """How a function's spec refers to this volume (the server resolves it)."""
        if self._name is None:
            return {"volume_id": self._volume_id}
        return {
            "name": self._name,
            "environment": self._environment,
            "create_if_missing": self._create_if_missing,
        }

    # -- operations ---------------------------------------------------------------------
    async def _commit(self) -> None:
        """Make the volume's changes durable. On the local backend every write is already
        visible to all containers; this flushes the volume's filesystem to disk."""
        await volume_api.call("POST", f"/v1/volumes/{await self._vid()}/commit")

    async def _reload(self) -> None:
        """See the latest changes. On the local backend they are always visible; this only
        checks that the volume still exists."""
        await volume_api.call("POST", f"/v1/volumes/{await self._vid()}/reload")

    async def _listdir(self, path: str = "/", recursive: bool = False) -> list[FileEntry]:
        """Entries under `path` (paths relative to the volume's root); a file path gives
        that file. Raises FileNotFoundError when nothing is there."""
        rows = await volume_api.call(
            "GET",
            f"/v1/volumes/{await self._vid()}/ls",
            params={"path": path, "recursive": recursive},
        )
        return [FileEntry._from(r) for r in rows]

    async def _iterdir(self, path: str = "/", recursive: bool = False) -> AsyncIterator[FileEntry]:
        for entry in await self._listdir(path, recursive=recursive):
            yield entry

    async def _read_file(self, path: str) -> AsyncIterator[bytes]:
        """The file's bytes, in chunks as they arrive (never the whole file in memory)."""
        vid = await self._vid()
        async for chunk in volume_api.download(f"/v1/volumes/{vid}/files", {"path": path}):
            yield chunk

    async def _read_into(
        self, path: str, fileobj: IO[bytes], progress_cb: Callable[..., Any] | None = None
    ) -> int:
        """Write the file into `fileobj`; returns the number of bytes."""
        total = 0
        async for chunk in self._read_file(path):
            await asyncio.to_thread(fileobj.write, chunk)
            total += len(chunk)
            if progress_cb is not None:
                progress_cb(advance=len(chunk))
        return total

    async def _remove_file(self, path: str, recursive: bool = False) -> None:
        """Remove a file, or a directory with `recursive=True`."""
        await volume_api.call(
            "DELETE",
            f"/v1/volumes/{await self._vid()}/files",
            params={"path": path, "recursive": recursive},
        )

    async def _copy_files(
        self, src_paths: list[str], dst_path: str, recursive: bool = False
    ) -> None:
        """Copy files within the volume: into `dst_path` when it is a directory (or there
        are several sources), else to `dst_path` itself."""
        if isinstance(src_paths, str):
            raise InvalidError("copy_files takes a list of source paths")
        await volume_api.call(
            "POST",
            f"/v1/volumes/{await self._vid()}/copy",
            json={"sources": list(src_paths), "dest": dst_path, "recursive": recursive},
        )

    def _batch_upload(self, force: bool = False) -> UploadBatch:
        return UploadBatch(self, force=force)

    # The blocking methods and their `.aio` forms (ketch._utils.aio).
    hydrate = aio_method(_hydrate)
    commit = aio_method(_commit)
    reload = aio_method(_reload)
    listdir = aio_method(_listdir)
    iterdir = aio_iter_method(_iterdir)
    read_file = aio_iter_method(_read_file)
    read_file_into_fileobj = aio_method(_read_into)
    remove_file = aio_method(_remove_file)
    copy_files = aio_method(_copy_files)


def _ephemeral(environment_name: str | None = None) -> _Ephemeral:
    return _Ephemeral(environment_name)


async def _delete(name: str, *, environment_name: str | None = None) -> None:
    """Delete the named volume and all its files."""
    validate_name("volume", name)
    await volume_api.call(
        "DELETE",
        f"/v1/volumes/named/{name}",
        params={"environment": _environment(environment_name)},
    )


Volume.ephemeral = _Both(_ephemeral)
Volume.delete = Aio(_delete, "delete")


class _Ephemeral:
    """`with Volume.ephemeral() as vol:` (or `async with`): a nameless volume that is
    deleted, files and all, when the block ends."""

    def __init__(self, environment_name: str | None) -> None:
        self._environment = environment_name
        self._volume: Volume | None = None

    async def _create(self) -> Volume:
        rec = await volume_api.call(
            "POST", "/v1/volumes/ephemeral", json={"environment": _environment(self._environment)}
        )
        self._volume = Volume._new(None, rec["environment"], False, str(rec["volume_id"]))
        return self._volume

    async def _drop(self) -> None:
        if self._volume is not None:
            await volume_api.call("DELETE", f"/v1/volumes/{self._volume._volume_id}")

    def __enter__(self) -> Volume:
        return run_sync(self._create())

    def __exit__(self, *exc: object) -> None:
        run_sync(self._drop())

    async def __aenter__(self) -> Volume:
        return await run_async(self._create())

    async def __aexit__(self, *exc: object) -> None:
        await run_async(self._drop())


class UploadBatch:
    """Files queued by `put_file` / `put_directory`, uploaded when the block ends.

    Without `force`, nothing is uploaded if any target already exists (FileExistsError
    names them); files are streamed, never read whole into memory."""

    def __init__(self, volume: Volume, *, force: bool) -> None:
        self._volume = volume
        self._force = force
        self._items: list[tuple[str | IO[bytes], str, int | None]] = []

    def put_file(
        self,
        local_file: str | os.PathLike[str] | IO[bytes],
        remote_path: str,
        mode: int | None = None,
    ) -> None:
        remote = _remote(remote_path)
        if isinstance(local_file, str | os.PathLike):
            path = Path(local_file)
            if not path.is_file():
                raise FileNotFoundError(f"no such local file: {path}")
            if mode is None:
                mode = stat.S_IMODE(path.stat().st_mode)
            self._items.append((str(path), remote, mode))
        else:
            self._items.append((local_file, remote, mode))

    def put_directory(
        self, local_path: str | os.PathLike[str], remote_path: str, recursive: bool = True
    ) -> None:
        base = Path(local_path)
        if not base.is_dir():
            raise NotADirectoryError(f"no such local directory: {base}")
        files = base.rglob("*") if recursive else base.iterdir()
        for f in sorted(files):
            if f.is_file():
                rel = f.relative_to(base).as_posix()
                self.put_file(f, str(PurePosixPath(_remote(remote_path)) / rel))

    async def _upload(self) -> None:
        vid = await self._volume._vid()
        remotes = [r for _, r, _ in self._items]
        if len(set(remotes)) != len(remotes):
            dup = sorted({r for r in remotes if remotes.count(r) > 1})
            raise InvalidError(f"batch_upload: {', '.join(dup)} given more than once")
        if not self._force and remotes:
            taken = await volume_api.call(
                "POST", f"/v1/volumes/{vid}/exists", json={"paths": remotes}
            )
            if taken:
                raise FileExistsError(
                    f"already in the volume: {', '.join(taken)}; use batch_upload(force=True) "
                    "(ketch volume put --force) to replace them"
                )
        for source, remote, mode in self._items:
            await asyncio.to_thread(volume_api.upload_sync, vid, source, remote, mode, self._force)

    def __enter__(self) -> UploadBatch:
        return self

    def __exit__(self, exc_type: object, *rest: object) -> None:
        if exc_type is None:
            run_sync(self._upload())

    async def __aenter__(self) -> UploadBatch:
        return self

    async def __aexit__(self, exc_type: object, *rest: object) -> None:
        if exc_type is None:
            await run_async(self._upload())


def _remote(path: str) -> str:
    if not isinstance(path, str) or not path.strip("/"):
        raise InvalidError(f"remote path must name a file in the volume, got {path!r}")
    if ".." in PurePosixPath(path).parts:
        raise InvalidError(f"remote path {path!r} may not contain '..'")
    return path


def volume_mounts(
    tag: str, app_volumes: Mapping[Any, Any], fn_volumes: Mapping[Any, Any]
) -> list[dict[str, Any]]:
    """A function's mounts for the deploy spec: the app's volumes, then the function's
    (which win on the same path), each checked."""
    merged: dict[str, Any] = {}
    for mapping in (app_volumes, fn_volumes):
        for key, vol in mapping.items():
            merged[check_mount_path(key)] = vol
    check_mount_set(list(merged))
    out = []
    for mount, vol in sorted(merged.items()):
        if not isinstance(vol, Volume):
            raise InvalidError(
                f"{tag}: volumes[{mount!r}] must be a ketch.Volume (Volume.from_name(...)), "
                f"got {type(vol).__name__}"
            )
        if vol._name is None and vol._volume_id is None:
            raise InvalidError(
                f"{tag}: volumes[{mount!r}] is an ephemeral volume that is no longer open"
            )
        out.append({"mount": mount, **vol._spec()})
    return out
