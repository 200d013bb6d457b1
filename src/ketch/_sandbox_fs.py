"""`Sandbox.filesystem`: whole-file operations in a sandbox, with Modal's error types
(`SandboxFilesystem*Error`) where `Sandbox.open`/`ls`/`mkdir`/`rm` raise Python's own."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ketch._utils.aio import aio_method
from ketch.exception import (
    Error,
    SandboxFilesystemError,
    SandboxFilesystemIsADirectoryError,
    SandboxFilesystemNotADirectoryError,
    SandboxFilesystemNotFoundError,
    SandboxFilesystemPathAlreadyExistsError,
    SandboxFilesystemPermissionError,
)

if TYPE_CHECKING:
    from ketch.sandbox import Sandbox

_ERRORS: dict[type[BaseException], type[SandboxFilesystemError]] = {
    FileNotFoundError: SandboxFilesystemNotFoundError,
    IsADirectoryError: SandboxFilesystemIsADirectoryError,
    NotADirectoryError: SandboxFilesystemNotADirectoryError,
    FileExistsError: SandboxFilesystemPathAlreadyExistsError,
    PermissionError: SandboxFilesystemPermissionError,
}


@contextlib.contextmanager
def _modal_errors() -> Iterator[None]:
    try:
        yield
    except SandboxFilesystemError:
        raise
    except tuple(_ERRORS) as exc:
        kind = next(v for k, v in _ERRORS.items() if isinstance(exc, k))
        raise kind(str(exc)) from exc
    except Error as exc:
        if type(exc) is Error:  # the agent's other OS errors
            raise SandboxFilesystemError(str(exc)) from exc
        raise


@dataclass(frozen=True)
class FileInfo:
    """One entry of a sandbox's filesystem."""

    name: str
    path: str
    type: str  # "file", "directory" or "symlink"
    size: int
    mode: int
    modified_time: float

    def is_file(self) -> bool:
        return self.type == "file"

    def is_dir(self) -> bool:
        return self.type == "directory"

    def is_symlink(self) -> bool:
        return self.type == "symlink"


def _info(raw: dict[str, Any]) -> FileInfo:
    return FileInfo(
        name=str(raw["name"]),
        path=str(raw["path"]),
        type=str(raw["type"]),
        size=int(raw["size"]),
        mode=int(raw["mode"]),
        modified_time=float(raw["mtime"]),
    )


class SandboxFilesystem:
    def __init__(self, sandbox: Sandbox) -> None:
        self._sb = sandbox

    async def _read_bytes(self, remote_path: str) -> bytes:
        with _modal_errors():
            fh = await self._sb.open.aio(remote_path, "rb")
            data: bytes = await fh.read.aio()
            return data

    async def _read_text(self, remote_path: str) -> str:
        return (await self._read_bytes(remote_path)).decode()

    async def _write_bytes(self, data: bytes | bytearray | memoryview, remote_path: str) -> None:
        with _modal_errors():
            fh = await self._sb.open.aio(remote_path, "wb")
            await fh.write.aio(bytes(data))
            await fh.close.aio()

    async def _write_text(self, data: str, remote_path: str) -> None:
        await self._write_bytes(data.encode(), remote_path)

    async def _list_files(self, remote_path: str) -> list[FileInfo]:
        with _modal_errors():
            reply = await self._sb._fs("ls", remote_path)
        return [_info(e) for e in reply["entries"]]

    async def _make_directory(self, remote_path: str, *, create_parents: bool = True) -> None:
        with _modal_errors():
            await self._sb._fs("mkdir", remote_path, parents=create_parents)

    async def _remove(self, remote_path: str, *, recursive: bool = False) -> None:
        with _modal_errors():
            await self._sb._fs("rm", remote_path, recursive=recursive)

    async def _stat(self, remote_path: str) -> FileInfo:
        with _modal_errors():
            return _info(await self._sb._fs("stat", remote_path))

    async def _copy_from_local(self, local_path: str | os.PathLike[str], remote_path: str) -> None:
        with open(local_path, "rb") as fh:
            data = fh.read()
        await self._write_bytes(data, remote_path)

    async def _copy_to_local(self, remote_path: str, local_path: str | os.PathLike[str]) -> None:
        data = await self._read_bytes(remote_path)
        with open(local_path, "wb") as fh:
            fh.write(data)

    read_bytes = aio_method(_read_bytes)
    read_text = aio_method(_read_text)
    write_bytes = aio_method(_write_bytes)
    write_text = aio_method(_write_text)
    list_files = aio_method(_list_files)
    make_directory = aio_method(_make_directory)
    remove = aio_method(_remove)
    stat = aio_method(_stat)
    copy_from_local = aio_method(_copy_from_local)
    copy_to_local = aio_method(_copy_to_local)
