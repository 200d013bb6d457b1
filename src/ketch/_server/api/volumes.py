"""The management API's volume routes: records, listings, and streamed file transfer.

The one part of the API a container may use, with its own credential (SPEC I4): for the
volumes of its own environment only."""

from __future__ import annotations

import asyncio
import errno
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import StreamingResponse

from ketch._server import volumes as vfs
from ketch._server.api.auth import CallerAuth, check_environment
from ketch._server.api_models import (
    CopyIn,
    EnvironmentIn,
    EnvQuery,
    IdParam,
    ModeQuery,
    NameParam,
    PathQuery,
    PathsIn,
    VolumeNameIn,
)
from ketch._server.credentials import Scope

if TYPE_CHECKING:
    from ketch._server.main import Server
    from ketch._server.volumes import VolumeManager, VolumeRecord

T = TypeVar("T")

# Builtin errors of file operations, passed to the SDK by name (it raises the same type).
_FS_STATUS: dict[type[OSError], int] = {
    FileNotFoundError: 404,
    FileExistsError: 409,
    IsADirectoryError: 400,
    NotADirectoryError: 400,
}
_CHUNK = 2**20
_RAW_BODY = {
    "requestBody": {
        "required": False,
        "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
    }
}


# Other OS errors that the request's path or content causes, not the server's disk.
_REQUEST_ERRNOS = {
    errno.ENAMETOOLONG: 400,
    errno.ELOOP: 400,
    errno.EINVAL: 400,
    errno.ENOTEMPTY: 409,
    errno.EEXIST: 409,
    errno.EXDEV: 400,
}


async def _fs(fn: Callable[..., T], *args: Any) -> T:
    """Run a blocking file operation off the loop; its OS errors become JSON answers."""
    try:
        return await asyncio.to_thread(fn, *args)
    except tuple(_FS_STATUS) as exc:
        code = next(c for t, c in _FS_STATUS.items() if isinstance(exc, t))
        raise HTTPException(code, {"type": type(exc).__name__, "message": str(exc)}) from exc
    except OSError as exc:
        if exc.errno not in _REQUEST_ERRNOS:
            raise
        raise HTTPException(
            _REQUEST_ERRNOS[exc.errno], {"type": "OSError", "message": str(exc)}
        ) from exc


def volume_router(server: Server) -> APIRouter:
    router = APIRouter(prefix="/v1/volumes")
    # The server token (None) or a container's scope; every route checks the environment.
    caller_auth = Depends(CallerAuth(server))

    def manager() -> VolumeManager:
        return server.apps.volumes

    def record(vid: str, caller: Scope | None) -> VolumeRecord:
        rec = manager().get(vid)
        check_environment(caller, rec.environment)
        return rec

    def root(vid: str, caller: Scope | None) -> Path:
        record(vid, caller)
        return manager().live_path(vid)

    @router.get("")
    async def list_volumes(
        environment: EnvQuery = "main", caller: Scope | None = caller_auth
    ) -> list[dict[str, Any]]:
        vfs.check_names(None, environment)
        check_environment(caller, environment)
        return manager().list_named(environment)

    @router.post("")
    async def create(body: VolumeNameIn, caller: Scope | None = caller_auth) -> dict[str, Any]:
        check_environment(caller, body.environment)
        return manager().create(body.environment, body.name).as_dict()

    @router.post("/lookup")
    async def lookup(body: VolumeNameIn, caller: Scope | None = caller_auth) -> dict[str, Any]:
        check_environment(caller, body.environment)
        rec = manager().lookup(
            body.environment, body.name, create_if_missing=body.create_if_missing
        )
        return rec.as_dict()

    @router.post("/ephemeral")
    async def ephemeral(body: EnvironmentIn, caller: Scope | None = caller_auth) -> dict[str, Any]:
        check_environment(caller, body.environment)
        return manager().create_ephemeral(body.environment).as_dict()

    @router.delete("/named/{name}")
    async def delete_named(
        name: NameParam, environment: EnvQuery = "main", caller: Scope | None = caller_auth
    ) -> dict[str, Any]:
        check_environment(caller, environment)
        rec = manager().lookup(environment, name, create_if_missing=False)
        await asyncio.to_thread(manager().purge, manager().delete(rec))
        return {"deleted": rec.volume_id}

    @router.get("/{vid}")
    async def get(vid: IdParam, caller: Scope | None = caller_auth) -> dict[str, Any]:
        return record(vid, caller).as_dict()

    @router.delete("/{vid}")
    async def delete(vid: IdParam, caller: Scope | None = caller_auth) -> dict[str, Any]:
        rec = record(vid, caller)
        await asyncio.to_thread(manager().purge, manager().delete(rec))
        return {"deleted": vid}

    @router.post("/{vid}/commit")
    async def commit(vid: IdParam, caller: Scope | None = caller_auth) -> dict[str, Any]:
        await asyncio.to_thread(vfs.syncfs, root(vid, caller))
        return {"ok": True}

    @router.post("/{vid}/reload")
    async def reload(vid: IdParam, caller: Scope | None = caller_auth) -> dict[str, Any]:
        root(vid, caller)  # nothing to fetch on one host: only check the volume is still there
        return {"ok": True}

    @router.get("/{vid}/ls")
    async def listdir(
        vid: IdParam,
        path: PathQuery = "/",
        recursive: bool = False,
        caller: Scope | None = caller_auth,
    ) -> list[dict[str, Any]]:
        return await _fs(vfs.list_entries, root(vid, caller), path, recursive)

    @router.post("/{vid}/exists")
    async def exists(vid: IdParam, body: PathsIn, caller: Scope | None = caller_auth) -> list[str]:
        return await _fs(vfs.existing, root(vid, caller), body.paths)

    @router.get("/{vid}/files")
    async def download(
        vid: IdParam, path: PathQuery, caller: Scope | None = caller_auth
    ) -> StreamingResponse:
        fd, size = await _fs(vfs.open_for_read, root(vid, caller), path)

        async def body() -> AsyncIterator[bytes]:
            try:
                while data := await asyncio.to_thread(os.read, fd, _CHUNK):
                    yield data
            finally:
                os.close(fd)

        return StreamingResponse(
            body(), media_type="application/octet-stream", headers={"content-length": str(size)}
        )

    @router.put("/{vid}/files", openapi_extra=_RAW_BODY)
    async def upload(
        vid: IdParam,
        path: PathQuery,
        request: Request,
        force: bool = False,
        mode: ModeQuery = None,
        caller: Scope | None = caller_auth,
    ) -> dict[str, Any]:
        where = root(vid, caller)  # on the loop: the store is not used from threads
        up = await _fs(lambda: vfs.Upload(where, manager().staging, path, force=force, mode=mode))
        try:
            pending: list[bytes] = []
            held = 0
            async for chunk in request.stream():
                pending.append(chunk)
                held += len(chunk)
                if held >= _CHUNK:  # one thread hop per MiB, not per network read
                    await asyncio.to_thread(up.write, b"".join(pending))
                    pending, held = [], 0
            if pending:
                await asyncio.to_thread(up.write, b"".join(pending))
            size = await _fs(up.finish)
        except BaseException:
            await asyncio.to_thread(up.abort)
            raise
        return {"path": path, "size": size}

    @router.delete("/{vid}/files")
    async def remove(
        vid: IdParam, path: PathQuery, recursive: bool = False, caller: Scope | None = caller_auth
    ) -> dict[str, Any]:
        await _fs(vfs.remove, root(vid, caller), path, recursive)
        return {"removed": path}

    @router.post("/{vid}/copy")
    async def copy(
        vid: IdParam, body: CopyIn, caller: Scope | None = caller_auth
    ) -> dict[str, Any]:
        await _fs(vfs.copy, root(vid, caller), body.sources, body.dest, body.recursive)
        return {"ok": True}

    return router
