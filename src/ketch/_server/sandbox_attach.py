"""The sandbox agent where a function runs: in one of its live containers (`ketch container
exec`, `ketch.forward` from inside it), or in a sandbox made of its image, secrets, volumes
and source (`ketch shell APP::FUNCTION`).

A container's agent is started by its runtime (the "agent" message) as a child of its own,
so it runs in the container's namespaces and limits and ends with it; its socket is in the
function's socket directory, which that container sees. It is one per container, made on
first need and kept while the container lives.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

from ketch._server import launch
from ketch._server.sandbox_models import SandboxCreate
from ketch._server.sandboxes import Sandbox, SandboxManager
from ketch._server.volumes import container_mounts
from ketch._utils.ids import new_id
from ketch._utils.protocol import messages as m
from ketch._utils.protocol.spec import ImageSpec
from ketch.exception import InvalidError, NotFoundError

if TYPE_CHECKING:
    from ketch._server.model import FunctionDef


def _short(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:10]


async def attach(mgr: SandboxManager, cid: str) -> Sandbox:
    """The agent of container `cid`, started now if it has none."""
    for sb in mgr.live.values():
        if sb.container_id == cid:
            return sb
    sched = mgr.server.scheduler
    c = sched.containers.get(cid)
    if c is None or c.channel is None or c.state not in ("ready", "busy"):
        raise NotFoundError(f"container {cid} is not running")
    fdef = c.pool.function
    sock_dir = launch.web_socket_dir(sched.sockets_dir, fdef) / f"a-{_short(cid)}"
    sock_dir.mkdir(mode=0o700, exist_ok=True)
    secrets = mgr.server.apps.function_env(fdef)
    sb = Sandbox(
        sandbox_id=new_id("sb"),
        app_id=fdef.app_id,
        app_name=fdef.app_name,
        environment=fdef.environment,
        name=None,
        tags={"container": cid},
        env={**launch.python_env(fdef.image), **launch.user_env(fdef, secrets)},
        workdir=_workdir(fdef, mgr.server.scheduler.backend.sandboxed),
        timeout=float("inf"),
        idle_timeout=None,
        ports={},
        sock_dir=sock_dir,
        container_id=cid,
    )
    mgr.live[sb.sandbox_id] = sb
    channel = c.channel
    sock = sock_dir / "agent.sock"

    async def start() -> None:
        msg: m.StartAgent = {"t": m.AGENT, "socket": str(sock)}
        channel.send(msg)

    try:
        await mgr.connect_agent(sb, sock, start)
    except BaseException as exc:
        mgr.end(sb, "failed", None, f"the container's agent did not start: {exc}")
        raise
    return sb


def _workdir(fdef: FunctionDef, sandboxed: bool) -> str:
    if launch.source_at_root(fdef, sandboxed):
        return (
            fdef.image.workdir if fdef.image.rootfs is not None and fdef.image.workdir else "/root"
        )
    return fdef.source_dir or "/"


async def shell(
    mgr: SandboxManager, environment: str, app_name: str, tag: str, timeout: int
) -> Sandbox:
    """A sandbox on function `tag`'s image, with its secrets, volumes, files and source."""
    srv = mgr.server
    app = srv.apps.find(environment, app_name)
    if app is None:
        raise NotFoundError(f"app {app_name!r} is not deployed in environment {environment!r}")
    fid = app["functions"].get(tag)
    fdef = srv.scheduler.functions.get(fid) if fid else None
    if fdef is None:
        raise NotFoundError(f"app {app_name!r} has no function {tag!r}")
    if not srv.scheduler.backend.sandboxed and fdef.image.rootfs is None:
        raise InvalidError("ketch shell runs in a sandbox, which is off on this server")
    opts = fdef.options
    sid = new_id("sb")
    sock_dir = srv.sockets_dir / f"x-{_short(sid)}"
    sock_dir.mkdir(mode=0o700)
    sb = Sandbox(
        sandbox_id=sid,
        app_id=fdef.app_id,
        app_name=fdef.app_name,
        environment=fdef.environment,
        name=None,
        tags={"shell": tag},
        env={**launch.python_env(fdef.image), **launch.user_env(fdef, srv.apps.function_env(fdef))},
        workdir=_workdir(fdef, True),
        timeout=float(timeout),
        idle_timeout=None,
        ports={},
        sock_dir=sock_dir,
    )
    req = SandboxCreate(
        app_id=fdef.app_id,
        image=ImageSpec(python_version="3.11"),  # unused: the function's image is built
        timeout=timeout,
        cpu=launch.limit_of(opts.cpu),
        memory=launch.mb_limit(opts.memory),
        block_network=opts.block_network,
    )
    mgr.live[sid] = sb
    try:
        await mgr.launch(
            sb,
            req,
            fdef.image,
            container_mounts(fdef.volumes, fdef.spec.volumes),
            fdef.files_dir,
            fdef.source_dir,
        )
    except BaseException as exc:
        mgr.end(sb, "failed", None, f"the shell's sandbox did not start: {exc}")
        raise
    return sb
