"""The sandbox routes (SPEC X1-X2): create (its build log streamed), look up, list, tag,
wait, terminate; processes (exec, output by offset, input, exit); files; tunnels; logs.

A container's credential may use them too (functions create sandboxes, as on Modal), for
the sandboxes of its own environment."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import Response, StreamingResponse

from ketch._server import sandbox_attach
from ketch._server.api.auth import CallerAuth, check_environment
from ketch._server.api.progress import Say, stream_progress
from ketch._server.api_models import EnvQuery
from ketch._server.credentials import Scope
from ketch._server.sandbox_models import (
    AttachIn,
    Exec,
    FileOp,
    ForwardIn,
    SandboxCreate,
    ShellIn,
    Tags,
)
from ketch._server.sandbox_procs import read, wait_for
from ketch._server.sandboxes import Sandbox, SandboxManager, SandboxOpError
from ketch.exception import InvalidError

if TYPE_CHECKING:
    from ketch._server.main import Server

log = logging.getLogger("ketch.api")

# Long polls answer within this, so that proxies and clients never see an idle connection.
_LONGEST_WAIT = 55.0
# What the agent's file errors become: the HTTP status, and the name the SDK raises.
_FS_STATUS = {
    "FileNotFoundError": 404,
    "FileExistsError": 409,
    "IsADirectoryError": 400,
    "NotADirectoryError": 400,
    "PermissionError": 403,
    "SandboxFilesystemDirectoryNotEmptyError": 409,
    "OSError": 400,
}
_RAW = {
    "requestBody": {
        "required": False,
        "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
    }
}
Wait = Annotated[float, Query(ge=0, le=_LONGEST_WAIT)]


def _tunnel_view(sb: Sandbox, scheme_tls: bool) -> dict[str, Any]:
    out = {}
    for port, (host, listen) in sb.tunnels.items():
        tls = scheme_tls and sb.ports[port]
        out[str(port)] = {
            "host": host,
            "port": listen,
            "url": f"{'https' if tls else 'http'}://{host}:{listen}",
            "encrypted": tls,
        }
    return out


def sandbox_router(server: Server) -> APIRouter:
    router = APIRouter(prefix="/v1/sandboxes")
    caller_auth = Depends(CallerAuth(server))

    def manager() -> SandboxManager:
        return server.sandboxes

    def held(sandbox_id: str, caller: Scope | None, running: bool = True) -> Sandbox:
        mgr = manager()
        sb = mgr.get(sandbox_id)
        check_environment(caller, sb.environment)
        return mgr.running(sandbox_id) if running else sb

    @router.post(
        "",
        response_class=StreamingResponse,
        responses={200: {"content": {"application/x-ndjson": {}}}},
    )
    async def create(body: SandboxCreate, caller: Scope | None = caller_auth) -> StreamingResponse:
        """The image's build log, then the sandbox or an error: one JSON object per line."""
        env = None if caller is None else caller.environment

        async def work(say: Say) -> dict[str, Any]:
            return (await manager().create(body, say, env)).info()

        return stream_progress(work, "sandbox create")

    def operator(caller: Scope | None, what: str) -> None:
        if caller is not None:
            raise HTTPException(
                403, {"type": "AuthError", "message": f"{what} needs the server token"}
            )

    @router.post("/attach")
    async def attach(body: AttachIn, caller: Scope | None = caller_auth) -> dict[str, Any]:
        """The agent of a running function container (`ketch container exec`)."""
        operator(caller, "attaching to a container")
        return (await sandbox_attach.attach(manager(), body.container_id)).info()

    @router.post("/shell")
    async def shell(body: ShellIn, caller: Scope | None = caller_auth) -> dict[str, Any]:
        """A sandbox on a deployed function's image, secrets and volumes (`ketch shell`)."""
        operator(caller, "ketch shell")
        sb = await sandbox_attach.shell(
            manager(), body.environment, body.app, body.function, body.timeout
        )
        return sb.info()

    @router.post("/forward")
    async def forward(body: ForwardIn, caller: Scope | None = caller_auth) -> dict[str, Any]:
        """A tunnel to a port of the calling container (`ketch.forward`, from inside one)."""
        if caller is None:
            raise InvalidError("forward() is for code inside a container, which it exposes")
        mgr = manager()
        sb = await sandbox_attach.attach(mgr, caller.container_id)
        await _agent_op(mgr.request(sb, {"t": "ports", "dir": str(sb.sock_dir),
                                         "ports": [body.port]}))  # fmt: skip
        encrypted = not body.unencrypted
        target = str(sb.sock_dir / f"p{body.port}.sock")
        host, listen = await mgr.tunnels.open(sb.sandbox_id, target, encrypted)
        tls = encrypted and server.web.tls is not None
        return {"host": host, "port": listen, "encrypted": tls, "owner": sb.sandbox_id}

    @router.delete("/forward/{owner}/{port}")
    async def unforward(
        owner: str, port: int, caller: Scope | None = caller_auth
    ) -> dict[str, Any]:
        sb = held(owner, caller, running=False)
        if caller is not None and sb.container_id != caller.container_id:
            raise HTTPException(403, {"type": "AuthError", "message": "not this container's"})
        manager().tunnels.close(owner, port)
        return {}

    @router.get("")
    async def listing(
        environment: EnvQuery = "main",
        app_id: str | None = None,
        tag: Annotated[list[str], Query()] = [],  # noqa: B006 - FastAPI reads the default
        ended: bool = False,
        caller: Scope | None = caller_auth,
    ) -> dict[str, Any]:
        check_environment(caller, environment)
        tags = dict(t.partition("=")[::2] for t in tag)
        found = manager().listing(environment, app_id, tags, ended)
        return {"sandboxes": [sb.info() for sb in found]}

    @router.get("/by-name/{app_name}/{name}")
    async def by_name(
        app_name: str, name: str, environment: EnvQuery = "main", caller: Scope | None = caller_auth
    ) -> dict[str, Any]:
        check_environment(caller, environment)
        return manager().by_name(environment, app_name, name).info()

    @router.get("/{sandbox_id}")
    async def info(sandbox_id: str, caller: Scope | None = caller_auth) -> dict[str, Any]:
        return held(sandbox_id, caller, running=False).info()

    @router.get("/{sandbox_id}/wait")
    async def wait(
        sandbox_id: str, timeout: Wait = _LONGEST_WAIT, caller: Scope | None = caller_auth
    ) -> dict[str, Any]:
        sb = held(sandbox_id, caller, running=False)
        if not sb.ended.is_set() and timeout > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(sb.ended.wait(), timeout)
        return sb.info()

    @router.post("/{sandbox_id}/terminate")
    async def terminate(sandbox_id: str, caller: Scope | None = caller_auth) -> dict[str, Any]:
        sb = held(sandbox_id, caller, running=False)
        manager().terminate(sb)
        return sb.info()

    @router.put("/{sandbox_id}/tags")
    async def set_tags(
        sandbox_id: str, body: Tags, caller: Scope | None = caller_auth
    ) -> dict[str, Any]:
        sb = held(sandbox_id, caller, running=False)
        sb.tags = dict(body.tags)
        return sb.info()

    @router.get("/{sandbox_id}/tunnels")
    async def tunnels(sandbox_id: str, caller: Scope | None = caller_auth) -> dict[str, Any]:
        sb = held(sandbox_id, caller)
        return {"tunnels": _tunnel_view(sb, server.web.tls is not None)}

    @router.get("/{sandbox_id}/logs")
    async def logs(
        sandbox_id: str, tail: int | None = None, caller: Scope | None = caller_auth
    ) -> dict[str, Any]:
        from ketch._server.logs import LogFilter

        sb = held(sandbox_id, caller, running=False)
        match = LogFilter(container=sb.sandbox_id)
        entries = server.logs.entries(sb.app_id, match, tail)
        return {
            "lines": [{"stream": e["stream"], "line": e["line"], "ts": e["ts"]} for e in entries]
        }

    # -- processes ----------------------------------------------------------------------
    @router.post("/{sandbox_id}/exec")
    async def exec_(
        sandbox_id: str, body: Exec, caller: Scope | None = caller_auth
    ) -> dict[str, Any]:
        sb = held(sandbox_id, caller)
        proc = await manager().exec(sb, body)
        return {"pid": proc.pid}

    @router.get("/{sandbox_id}/procs/{pid}/output/{fd}")
    async def output(
        sandbox_id: str,
        pid: str,
        fd: int,
        offset: Annotated[int, Query(ge=0)] = 0,
        wait: Wait = 10.0,
        caller: Scope | None = caller_auth,
    ) -> Response:
        """Bytes of stdout (1) or stderr (2) from `offset`; the header `x-ketch-eof` says
        whether the stream has ended after them."""
        sb = held(sandbox_id, caller, running=False)
        proc = manager().proc(sb, pid)
        mgr = manager()
        data, start, eof = await read(
            proc, fd, offset, wait, lambda p, f, n: mgr.grant(sb, p, f, n)
        )
        headers = {"x-ketch-offset": str(start), "x-ketch-eof": "1" if eof else "0"}
        return Response(data, media_type="application/octet-stream", headers=headers)

    @router.post("/{sandbox_id}/procs/{pid}/stdin", openapi_extra=_RAW)
    async def stdin(
        sandbox_id: str,
        pid: str,
        request: Request,
        eof: bool = False,
        caller: Scope | None = caller_auth,
    ) -> dict[str, Any]:
        sb = held(sandbox_id, caller)
        data = await request.body()
        await _agent_op(manager().stdin(sb, pid, data, eof))
        return {}

    @router.get("/{sandbox_id}/procs/{pid}/wait")
    async def proc_wait(
        sandbox_id: str, pid: str, timeout: Wait = _LONGEST_WAIT, caller: Scope | None = caller_auth
    ) -> dict[str, Any]:
        sb = held(sandbox_id, caller, running=False)
        proc = manager().proc(sb, pid)
        code = await wait_for(proc, timeout)
        return {"returncode": code, "timed_out": proc.timed_out}

    @router.post("/{sandbox_id}/procs/{pid}/kill")
    async def proc_kill(
        sandbox_id: str, pid: str, caller: Scope | None = caller_auth
    ) -> dict[str, Any]:
        sb = held(sandbox_id, caller)
        manager().proc(sb, pid)
        if sb.link is not None:
            sb.link.send({"t": "kill", "pid": pid})
        return {}

    # -- files --------------------------------------------------------------------------
    @router.post("/{sandbox_id}/fs")
    async def file_op(
        sandbox_id: str, body: FileOp, caller: Scope | None = caller_auth
    ) -> dict[str, Any]:
        sb = held(sandbox_id, caller)
        reply = await _agent_op(manager().file_op(sb, body.model_dump()))
        return {k: v for k, v in reply.items() if k not in ("t", "rid", "ok")}

    @router.get("/{sandbox_id}/fs/read")
    async def file_read(
        sandbox_id: str,
        path: Annotated[str, Query(pattern=r"^/[^\x00]*$")],
        offset: Annotated[int, Query(ge=0)] = 0,
        length: Annotated[int, Query(ge=0, le=4 * 1024 * 1024)] = 4 * 1024 * 1024,
        caller: Scope | None = caller_auth,
    ) -> Response:
        sb = held(sandbox_id, caller)
        op = {"op": "read", "path": path, "offset": offset, "length": length}
        reply = await _agent_op(manager().file_op(sb, op))
        return Response(bytes(reply.get("data") or b""), media_type="application/octet-stream")

    @router.put("/{sandbox_id}/fs/write", openapi_extra=_RAW)
    async def file_write(
        sandbox_id: str,
        request: Request,
        path: Annotated[str, Query(pattern=r"^/[^\x00]*$")],
        offset: Annotated[int, Query(ge=-1)] = -1,
        truncate: bool = False,
        caller: Scope | None = caller_auth,
    ) -> dict[str, Any]:
        sb = held(sandbox_id, caller)
        data = await request.body()
        if len(data) > 16 * 1024 * 1024:
            raise InvalidError("a file write carries at most 16 MiB; send larger data in parts")
        op = {"op": "write", "path": path, "offset": offset, "data": data, "truncate": truncate}
        reply = await _agent_op(manager().file_op(sb, op))
        return {"n": reply.get("n", 0)}

    return router


async def _agent_op(op: Any) -> Any:
    """Await an agent request; what the agent refused becomes an answer with its status."""
    try:
        return await op
    except SandboxOpError as exc:
        status = _FS_STATUS.get(exc.kind, 400)
        raise HTTPException(status, {"type": exc.kind, "message": str(exc)}) from exc
