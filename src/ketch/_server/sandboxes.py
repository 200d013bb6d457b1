"""Sandboxes (SPEC X1-X3): containers that run a command and whatever is exec'd in them,
for code the user does not trust.

A sandbox is a container of the server's backend, started on its image under the same
sandbox as every function container (bubblewrap: I3; no capabilities), with a network
namespace of its own (its ports reach the outside only through its tunnels) or none at all
(`block_network`). It gets no credential and none of the server's sockets: the code in it
cannot call the server. Its first process is the agent (`_runtime/agent.py`), which
connects to a unix socket in a directory only this sandbox sees, and through which the
server starts processes, relays their input and output, does file operations and forwards
exposed ports.

A sandbox ends when its command exits (its exit code is the sandbox's), when it is
terminated (137), when its `timeout` or `idle_timeout` passes (124), or when its container
dies (the exit code, or 137 if it was killed). Idle means no exec running and no request
for it; the command itself running does not count. Sandboxes end with the server (their
processes die with it); records of ended ones are kept in memory for `from_id` and
`ketch sandbox list --all`, the newest `KEEP_ENDED`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import logging
import shutil
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ketch._backends.base import KILLED, ContainerHandle, ContainerSpec
from ketch._server import launch
from ketch._server.sandbox_models import Exec, SandboxCreate
from ketch._server.sandbox_procs import Proc
from ketch._server.tunnels import Tunnels
from ketch._utils.ids import new_id
from ketch._utils.wire import Channel, ChannelClosed
from ketch.exception import (
    AlreadyExistsError,
    ExecutionError,
    InvalidError,
    NotFoundError,
)

if TYPE_CHECKING:
    from ketch._server.images import BuiltImage
    from ketch._server.main import Server

log = logging.getLogger("ketch.sandboxes")

KEEP_ENDED = 1000
# From the container's start to the agent's hello (an image's Python importing asyncio).
AGENT_TIMEOUT = 60.0
# Exit codes of a sandbox that did not end by its command's exit (Modal's).
TIMEOUT_CODE = 124
TERMINATED_CODE = 137
# Frames the agent may send: output comes in 64 KiB pieces, file reads in 4 MiB ones.
_AGENT_FRAME = 64 * 1024 * 1024


@dataclass(eq=False)
class Sandbox:
    sandbox_id: str
    app_id: str
    app_name: str
    environment: str
    name: str | None
    tags: dict[str, str]
    env: dict[str, str]  # every process's environment: the image's, secrets, `env`
    workdir: str
    timeout: float
    idle_timeout: float | None
    ports: dict[int, bool]  # exposed port -> encrypted
    sock_dir: Path
    created: float = field(default_factory=time.time)
    state: str = "starting"  # starting | running | ended
    result: str | None = None  # exited | terminated | timeout | failed
    returncode: int | None = None
    error: str | None = None
    handle: ContainerHandle | None = None
    link: Channel | None = None
    procs: dict[str, Proc] = field(default_factory=dict)
    replies: dict[int, asyncio.Future[dict[str, Any]]] = field(default_factory=dict)
    ended: asyncio.Event = field(default_factory=asyncio.Event)
    last_active: float = field(default_factory=time.monotonic)
    tunnels: dict[int, tuple[str, int]] = field(default_factory=dict)
    gpus: tuple[int, ...] = ()
    # Set for an agent in a function's container (exec, forward): not a sandbox of its own.
    container_id: str | None = None
    timers: list[asyncio.TimerHandle] = field(default_factory=list)

    def info(self) -> dict[str, Any]:
        return {
            "sandbox_id": self.sandbox_id,
            "app_id": self.app_id,
            "app_name": self.app_name,
            "environment": self.environment,
            "name": self.name,
            "tags": dict(self.tags),
            "state": self.state,
            "result": self.result,
            "returncode": self.returncode,
            "error": self.error,
            "created": self.created,
            "execs": sum(
                1 for p in self.procs.values() if p.pid != "main" and not p.ended.is_set()
            ),
        }

    def running_execs(self) -> bool:
        return any(p.pid != "main" and not p.ended.is_set() for p in self.procs.values())


class SandboxManager:
    def __init__(self, server: Server) -> None:
        self.server = server
        self.live: dict[str, Sandbox] = {}
        self.ended: OrderedDict[str, Sandbox] = OrderedDict()
        self.tunnels = Tunnels(server.web.host, server.web.tls)
        self._rids = itertools.count(1)
        self._tasks: set[asyncio.Future[Any]] = set()

    def _spawn(self, coro: Any) -> None:
        # Held until done: the loop keeps only weak references to tasks.
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- lookups ----------------------------------------------------------------------
    def get(self, sandbox_id: str) -> Sandbox:
        found = self.live.get(sandbox_id) or self.ended.get(sandbox_id)
        if found is None:
            raise NotFoundError(f"sandbox {sandbox_id} not found")
        return found

    def running(self, sandbox_id: str) -> Sandbox:
        sb = self.get(sandbox_id)
        if sb.state == "ended":
            raise InvalidError(f"sandbox {sandbox_id} has ended ({sb.result})")
        sb.last_active = time.monotonic()
        return sb

    def by_name(self, environment: str, app_name: str, name: str) -> Sandbox:
        for sb in self.live.values():
            if (sb.environment, sb.app_name, sb.name) == (environment, app_name, name):
                return sb
        raise NotFoundError(
            f"no running sandbox named {name!r} in app {app_name!r} of environment {environment!r}"
        )

    def listing(
        self, environment: str, app_id: str | None, tags: dict[str, str], ended: bool
    ) -> list[Sandbox]:
        pool = list(self.live.values()) + (list(self.ended.values()) if ended else [])
        return [
            sb
            for sb in sorted(pool, key=lambda s: s.created)
            if sb.environment == environment
            and (app_id is None or sb.app_id == app_id)
            and all(sb.tags.get(k) == v for k, v in tags.items())
        ]

    # -- create -----------------------------------------------------------------------
    async def create(
        self, req: SandboxCreate, say: Any, environment_of_caller: str | None
    ) -> Sandbox:
        """Build the image, start the container and its agent, run the command. `say`
        takes build log lines."""
        srv = self.server
        app = srv.apps.apps.get(req.app_id)
        if app is None:
            raise NotFoundError(f"app {req.app_id} is not running (deploy it, or App.lookup it)")
        environment = str(app["environment"])
        if environment_of_caller is not None and environment_of_caller != environment:
            raise InvalidError(
                f"a container of environment {environment_of_caller!r} cannot create a "
                f"sandbox in app {req.app_id} of environment {environment!r}"
            )
        if req.name is not None and any(
            sb.app_id == req.app_id and sb.name == req.name for sb in self.live.values()
        ):
            raise AlreadyExistsError(
                f"a sandbox named {req.name!r} is already running in app {app['name']!r}"
            )
        if srv.scheduler.backend.sandboxed is False and not _has_rootfs_steps(req):
            raise InvalidError(
                "sandboxes run untrusted code and need the container sandbox (bubblewrap), "
                "which is off on this server (KETCH_SANDBOX=off, or bwrap missing)"
            )
        env = self._secret_env(environment, req.secrets)
        volumes = self._volumes(environment, req)
        image = await srv.builder.build(
            req.image.model_dump(mode="json", by_alias=True, exclude_unset=True),
            say,
            force=req.force_build,
            environment=environment,
        )
        files_dir = await self._lay_out_files(req)
        sid = new_id("sb")
        ports = {p: True for p in req.encrypted_ports}
        ports.update({p: False for p in req.unencrypted_ports if p not in ports})
        sock_dir = srv.sockets_dir / f"x-{hashlib.sha256(sid.encode()).hexdigest()[:10]}"
        sock_dir.mkdir(mode=0o700)
        sb = Sandbox(
            sandbox_id=sid,
            app_id=req.app_id,
            app_name=str(app["name"]),
            environment=environment,
            name=req.name,
            tags=dict(req.tags),
            env={**launch.python_env(image), **image.env, **env, **req.env},
            workdir=req.workdir or image.workdir or "/",
            timeout=float(req.timeout),
            idle_timeout=None if req.idle_timeout is None else float(req.idle_timeout),
            ports=ports,
            sock_dir=sock_dir,
        )
        if req.gpu:
            held = srv.scheduler.gpus.take(req.gpu, sid)
            if held is None:
                shutil.rmtree(sock_dir, ignore_errors=True)
                raise InvalidError(srv.scheduler.gpus.why_waiting(req.gpu).replace("waiting: ", ""))
            sb.gpus = held
        self.live[sid] = sb
        try:
            await self.launch(sb, req, image, volumes, files_dir)
        except BaseException as exc:
            self.end(sb, "failed", None, f"the sandbox did not start: {exc}")
            raise
        return sb

    def _secret_env(self, environment: str, refs: list[Any]) -> dict[str, str]:
        from ketch._utils.protocol.spec import InlineSecret

        env: dict[str, str] = {}
        for ref in refs:
            if isinstance(ref, InlineSecret):
                env.update(ref.values)
            else:
                values = self.server.apps.secret_values(ref.environment or environment, ref.name)
                missing = [k for k in ref.required_keys if k not in values]
                if missing:
                    raise NotFoundError(
                        f"secret {ref.name!r} is missing required keys: {', '.join(missing)}"
                    )
                env.update(values)
        return env

    def _volumes(self, environment: str, req: SandboxCreate) -> dict[str, str]:
        from ketch._server.volumes import container_mounts
        from ketch._utils.protocol.spec import StoredVolume

        apps = self.server.apps
        entries = {"sandbox": {"volumes": [v.model_dump(mode="json") for v in req.volumes]}}
        apps.volumes.attach(
            environment, entries, forbidden=[apps.home, self.server.scheduler.sockets_dir]
        )
        stored = [StoredVolume.model_validate(v) for v in entries["sandbox"]["volumes"]]
        return container_mounts(apps.volumes.host_mounts(stored), stored)

    async def _lay_out_files(self, req: SandboxCreate) -> str | None:
        from ketch._server.images import mount_files

        spec = req.image.model_dump(mode="json", by_alias=True, exclude_unset=True)
        mount = self.server.apps.mount_dir(spec)
        if mount is None:
            return None
        await asyncio.to_thread(mount_files, spec, mount)
        return str(mount) if mount.is_dir() else None

    async def launch(
        self,
        sb: Sandbox,
        req: SandboxCreate,
        image: BuiltImage,
        volumes: dict[str, str],
        files_dir: str | None,
        source_dir: str | None = None,
    ) -> None:
        srv = self.server
        sched = srv.scheduler
        sock = sb.sock_dir / "agent.sock"
        sandbox = launch.image_sandbox(
            image,
            hide=tuple(p for p in (srv.store.path.parent, sched.sockets_dir) if p),
            runtime_paths=(str(srv.runtime_core),),
            files_dir=files_dir,
            source_dir=source_dir,
            read_write=[*((h, m) for m, h in volumes.items()), (str(sb.sock_dir),) * 2],
            gpus=sb.gpus,
        )
        gpu_env, _ = sched.gpus.env(sb.gpus) if sb.gpus else ({}, None)
        agent_env = {
            **launch.python_env(image),
            **gpu_env,
            "PYTHONPATH": str(srv.runtime_core),
            "PYTHONDONTWRITEBYTECODE": "1",
        }
        sb.env.update(gpu_env)
        spec = ContainerSpec(
            container_id=sb.sandbox_id,
            python=image.python,
            env=agent_env,
            cwd=Path("/"),
            cpu=req.cpu,
            memory_mb=req.memory,
            gpus=tuple(str(i) for i in sb.gpus),
            block_network=req.block_network,
            isolate_network=not req.block_network,
            volumes=volumes,
            sandbox=sandbox,
            entry=(str(Path(srv.runtime_core) / "ketch" / "_runtime" / "agent.py"), str(sock)),
        )

        def sink(stream: str, line: str) -> None:
            srv.logs.emit(sb.app_id, "sandbox", sb.sandbox_id, stream, line)

        async def launch_it() -> None:
            sb.handle = await sched.backend.start(spec, sink)
            self._spawn(self._watch(sb))

        await self.connect_agent(sb, sock, launch_it)
        loop = asyncio.get_running_loop()
        sb.timers.append(loop.call_later(sb.timeout, self._expire, sb, "timeout"))
        if sb.idle_timeout is not None:
            self._arm_idle(sb)
        if sb.ports:
            await self.request(sb, {"t": "ports", "dir": str(sb.sock_dir), "ports": list(sb.ports)})
            for port in sb.ports:
                target = str(sb.sock_dir / f"p{port}.sock")
                sb.tunnels[port] = await self.tunnels.open(sb.sandbox_id, target, sb.ports[port])
        srv.logs.event(sb.app_id, "sandbox", sb.sandbox_id, f"sandbox {sb.sandbox_id} started")
        if req.args:
            main = Exec(args=req.args, workdir=req.workdir, pty=req.pty)
            await self.exec(sb, main, pid="main")

    async def connect_agent(
        self, sb: Sandbox, sock: Path, start: Callable[[], Awaitable[None]]
    ) -> None:
        """Listen on `sock`, `start` what runs the agent, take its connection and hello;
        then the sandbox is running."""
        connected: asyncio.Future[Channel] = asyncio.get_running_loop().create_future()

        async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            if connected.done():
                writer.close()  # one agent per sandbox; anything else in it is refused
                return
            connected.set_result(Channel(reader, writer, max_frame=_AGENT_FRAME))

        listener = await asyncio.start_unix_server(accept, str(sock), limit=2**20)
        try:
            await start()
            waiting = asyncio.ensure_future(asyncio.wait_for(connected, AGENT_TIMEOUT))
            ended = asyncio.ensure_future(sb.ended.wait())
            await asyncio.wait([waiting, ended], return_when=asyncio.FIRST_COMPLETED)
            ended.cancel()
            if not waiting.done():
                waiting.cancel()
                raise ExecutionError(sb.error or "the sandbox's container exited at its start")
            sb.link = waiting.result()
        finally:
            listener.close()
        hello = await asyncio.wait_for(sb.link.recv(), AGENT_TIMEOUT)
        if not hello or hello[0].get("t") != "hello":
            raise ExecutionError("the sandbox's agent did not say hello")
        self._spawn(self._read(sb))
        sb.state = "running"

    # -- processes ----------------------------------------------------------------------
    async def exec(self, sb: Sandbox, req: Exec, pid: str | None = None) -> Proc:
        if sb.link is None or sb.state == "ended":
            raise InvalidError(f"sandbox {sb.sandbox_id} is not running")
        env = {**sb.env, **self._secret_env(sb.environment, req.secrets), **req.env}
        proc = Proc(pid or new_id("pr"))
        sb.procs[proc.pid] = proc
        sb.link.send(
            {
                "t": "exec",
                "pid": proc.pid,
                "argv": list(req.args),
                "cwd": req.workdir or sb.workdir,
                "env": env,
                "pty": req.pty,
                "timeout": getattr(req, "timeout", None),
                "stdout": getattr(req, "stdout", True),
                "stderr": getattr(req, "stderr", True),
            }
        )
        error = await proc.started
        if error is not None:
            sb.procs.pop(proc.pid, None)
            raise ExecutionError(f"cannot run {req.args[0]!r} in the sandbox: {error}")
        return proc

    def proc(self, sb: Sandbox, pid: str) -> Proc:
        found = sb.procs.get(pid)
        if found is None:
            raise NotFoundError(f"process {pid} not found in sandbox {sb.sandbox_id}")
        return found

    def grant(self, sb: Sandbox, pid: str, fd: int, n: int) -> None:
        if sb.link is not None:
            sb.link.send({"t": "credit", "pid": pid, "fd": fd, "n": n})

    async def stdin(self, sb: Sandbox, pid: str, data: bytes, eof: bool) -> None:
        self.proc(sb, pid)
        await self.request(sb, {"t": "stdin", "pid": pid, "data": data, "eof": eof})

    async def file_op(self, sb: Sandbox, op: dict[str, Any]) -> dict[str, Any]:
        return await self.request(sb, {"t": "fs", **op})

    async def request(self, sb: Sandbox, msg: dict[str, Any]) -> dict[str, Any]:
        if sb.link is None or sb.state == "ended":
            raise InvalidError(f"sandbox {sb.sandbox_id} is not running")
        rid = next(self._rids)
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        sb.replies[rid] = fut
        sb.link.send({**msg, "rid": rid})
        try:
            reply = await fut
        finally:
            sb.replies.pop(rid, None)
        if not reply.get("ok"):
            err = reply.get("error") or {}
            raise SandboxOpError(str(err.get("type", "Error")), str(err.get("message", "")))
        return reply

    async def _read(self, sb: Sandbox) -> None:
        assert sb.link is not None
        try:
            while True:
                for msg in await sb.link.recv():
                    self._on_agent(sb, msg)
        except ChannelClosed:
            pass
        for fut in sb.replies.values():
            if not fut.done():
                ended = {"type": "InvalidError", "message": "the sandbox has ended"}
                fut.set_result({"ok": False, "error": ended})
        if sb.container_id is not None:
            self.end(sb, "exited", None, "its container has ended")
        elif sb.state != "ended" and sb.handle is not None:
            sb.handle.kill()  # the agent is gone: nothing in there can be reached any more

    def _on_agent(self, sb: Sandbox, msg: dict[str, Any]) -> None:
        kind = msg.get("t")
        proc = sb.procs.get(str(msg.get("pid")))
        if kind == "out" and proc is not None:
            data = bytes(msg.get("data") or b"")
            proc.streams[int(msg["fd"])].append(data)
            if proc.pid == "main":
                self._log_output(sb, int(msg["fd"]), data)
        elif kind == "eof" and proc is not None:
            proc.streams[int(msg["fd"])].close()
        elif kind == "started" and proc is not None and not proc.started.done():
            err = msg.get("error")
            proc.started.set_result(None if err is None else str(err.get("message", err)))
        elif kind == "exit" and proc is not None:
            timed_out = bool(msg.get("timed_out"))
            proc.exited(-1 if timed_out else int(msg["code"]), timed_out)
            sb.last_active = time.monotonic()
            if proc.pid == "main":
                self.end(sb, "exited", proc.returncode)
        elif kind == "reply":
            fut = sb.replies.get(int(msg.get("rid", 0)))
            if fut is not None and not fut.done():
                fut.set_result(msg)

    def _log_output(self, sb: Sandbox, fd: int, data: bytes) -> None:
        stream = "stdout" if fd == 1 else "stderr"
        for line in data.decode(errors="replace").splitlines():
            self.server.logs.emit(sb.app_id, "sandbox", sb.sandbox_id, stream, line)

    # -- the end ----------------------------------------------------------------------
    def _arm_idle(self, sb: Sandbox) -> None:
        assert sb.idle_timeout is not None
        loop = asyncio.get_running_loop()
        idle_for = time.monotonic() - sb.last_active
        if sb.running_execs() or idle_for < sb.idle_timeout:
            wait = sb.idle_timeout - idle_for if not sb.running_execs() else sb.idle_timeout
            sb.timers.append(loop.call_later(max(wait, 0.05), self._arm_idle, sb))
            return
        self._expire(sb, "idle")

    def _expire(self, sb: Sandbox, why: str) -> None:
        if sb.state != "ended":
            limit = sb.timeout if why == "timeout" else sb.idle_timeout
            self.end(sb, "timeout", TIMEOUT_CODE, f"{why} of {limit:g}s passed")

    def terminate(self, sb: Sandbox) -> None:
        if sb.state != "ended":
            self.end(sb, "terminated", TERMINATED_CODE)

    async def _watch(self, sb: Sandbox) -> None:
        assert sb.handle is not None
        reason, code = await sb.handle.wait()
        if sb.state != "ended":
            why = f"its container exited ({reason}, code {code})"
            self.end(sb, "failed", TERMINATED_CODE if reason == KILLED else code, why)
        self._release(sb)

    def end(self, sb: Sandbox, result: str, code: int | None, error: str | None = None) -> None:
        """Record how the sandbox ended and stop its container; its processes end with it."""
        if sb.state == "ended":
            return
        sb.state, sb.result, sb.returncode, sb.error = "ended", result, code, error
        for timer in sb.timers:
            timer.cancel()
        for proc in sb.procs.values():
            proc.exited(proc.returncode if proc.ended.is_set() else None)
        sb.ended.set()
        self.live.pop(sb.sandbox_id, None)
        self.ended[sb.sandbox_id] = sb
        while len(self.ended) > KEEP_ENDED:
            self.ended.popitem(last=False)
        self.tunnels.close(sb.sandbox_id)
        text = f"sandbox {sb.sandbox_id} ended: {result}" + (f" ({error})" if error else "")
        self.server.logs.event(sb.app_id, "sandbox", sb.sandbox_id, text)
        if sb.handle is not None:
            self._spawn(sb.handle.stop(1.0))
        else:
            self._release(sb)

    def _release(self, sb: Sandbox) -> None:
        if sb.gpus:
            self.server.scheduler.gpus.release(sb.sandbox_id, sb.gpus)
            sb.gpus = ()
        if sb.link is not None:
            sb.link.close()
        shutil.rmtree(sb.sock_dir, ignore_errors=True)

    async def close(self) -> None:
        """The server stops: so does every sandbox."""
        for sb in list(self.live.values()):
            self.end(sb, "terminated", TERMINATED_CODE, "the server stopped")
        handles = [sb.handle for sb in self.ended.values() if sb.handle is not None]
        with contextlib.suppress(Exception):
            await asyncio.gather(*(h.stop(1.0) for h in handles), return_exceptions=True)
        await self.tunnels.close_all()


class SandboxOpError(Exception):
    """What the agent answered a failed request with: an error's name and message."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


def _has_rootfs_steps(req: SandboxCreate) -> bool:
    from ketch._images import steps as rootfs_steps

    return bool(
        rootfs_steps.needs_rootfs(
            req.image.model_dump(mode="json", by_alias=True, exclude_unset=True)
        )
    )
