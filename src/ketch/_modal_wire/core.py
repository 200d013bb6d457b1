"""The Modal front end's shared state and its collaborators in the ketch server."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from grpclib.const import Status
from grpclib.exceptions import GRPCError
from grpclib.server import Server

from ketch._backends.base import Backend
from ketch._modal_wire import apps, blobs, containers, deploy, invoke, objects, proto, servicer
from ketch._modal_wire.containers import Container
from ketch._modal_wire.servicer import Ctx, Handlers
from ketch._modal_wire.state import WireApp, WireCall, WireFunction, WireImage

log = logging.getLogger("ketch.modal_wire")

BuildFn = Callable[[dict[str, Any], Callable[[str], None]], Awaitable[Any]]
LogFn = Callable[[str, str, str, str, str], None]
# Containers a function gets at most while its inputs wait (first increment: no autoscaler
# policy of ketch's yet; see docs/modal-wire.md).
_MAX_CONTAINERS = 4


class Blobs:
    """Mount file contents by SHA-256, on disk."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)

    def _path(self, sha: str) -> Path:
        if len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha):
            raise GRPCError(Status.INVALID_ARGUMENT, f"not a SHA-256 hex digest: {sha!r}")
        return self.directory / sha

    def has(self, sha: str) -> bool:
        return self._path(sha).is_file()

    def put(self, sha: str, data: bytes) -> None:
        path = self._path(sha)
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(data)
        tmp.replace(path)

    def get(self, sha: str) -> bytes:
        return self._path(sha).read_bytes()


class Wire:
    def __init__(
        self,
        *,
        state_dir: Path,
        sockets_dir: Path,
        server_token: str,
        build: BuildFn,
        backend: Backend,
        emit: LogFn | None = None,
        environment: str = "main",
    ) -> None:
        self.pb2, self.grpc = proto.load()
        from google.protobuf import empty_pb2

        self.empty = empty_pb2.Empty
        self.server_token = server_token
        self.environment = environment
        self.sockets_dir = sockets_dir
        self.state_dir = state_dir
        self.backend = backend
        self.work_dir = state_dir / "containers"
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.blobs = Blobs(state_dir / "blobs")
        self.large_blobs = blobs.BlobStore(state_dir / "large")
        self._build = build
        self._emit = emit
        self.apps: dict[str, WireApp] = {}
        self.functions: dict[str, WireFunction] = {}
        self.mounts: dict[str, list[tuple[str, str, int]]] = {}
        self.mount_by_digest: dict[str, str] = {}
        self.images: dict[str, WireImage] = {}
        self.image_by_key: dict[tuple[Any, ...], str] = {}
        self.calls: dict[str, WireCall] = {}
        self.containers: dict[str, Container] = {}
        self._environment_ids: dict[str, str] = {}
        # (environment, name) -> the deployed app's id, and the one it replaced or that
        # was stopped last (what `modal app stop` reports on).
        self.deployed: dict[tuple[str, str], str] = {}
        self.previous: dict[tuple[str, str], str] = {}
        self._image_builds: dict[str, asyncio.Task[Any]] = {}
        self.handlers = Handlers()
        for module in (apps, objects, invoke, deploy, blobs):
            module.register(self, self.handlers)
        self._servers: list[Server] = []
        self._starts: set[asyncio.Task[None]] = set()
        self._unix_paths: list[Path] = []
        self._sweeper: asyncio.Future[None] | None = None

    # -- lookups ---------------------------------------------------------------------

    def app(self, app_id: str) -> WireApp:
        found = self.apps.get(app_id)
        if found is None:
            raise apps.missing("app", app_id)
        return found

    def container(self, ctx: Ctx) -> Container:
        task_id = invoke.container_only(ctx)
        found = self.containers.get(task_id)
        if found is None:
            raise GRPCError(Status.NOT_FOUND, f"container {task_id} is gone")
        return found

    def deployed_app(self, environment: str, name: str) -> WireApp | None:
        app = self.apps.get(self.deployed.get((environment, name), ""))
        return app if app is not None and not app.done else None

    def layout(self, app: WireApp) -> Any:
        """The app's objects as Modal's runtime and `modal deploy` read them back."""
        layout = self.pb2.AppLayout()
        for tag, function_id in app.function_ids.items():
            fn = self.functions.get(function_id)
            if fn is None or fn.handle_metadata is None:
                continue
            layout.function_ids[tag] = function_id
            obj = self.pb2.Object(object_id=function_id)
            obj.function_handle_metadata.CopyFrom(fn.handle_metadata)
            layout.objects.append(obj)
        for tag, class_id in app.class_ids.items():
            layout.class_ids[tag] = class_id
        return layout

    async def publish(self, app: WireApp, name: str, state: int) -> None:
        """`modal deploy`: the app becomes the one deployed under its name; the app that
        had the name before stops (its containers go; new calls use the new code)."""
        app.state = state
        if state != self.pb2.APP_STATE_DEPLOYED or not name:
            return
        app.name = name
        app.deployed_at = time.time()
        key = (app.environment, name)
        before = self.deployed.get(key)
        self.deployed[key] = app.app_id
        if before is not None and before != app.app_id:
            self.previous[key] = before
            old = self.apps.get(before)
            if old is not None and not old.done:
                await self.stop_app(old)

    def retire_containers(self, fn: WireFunction) -> None:
        """A function created again (a redeploy): its containers run the old code, so they
        finish what they hold and go; new ones start on demand."""
        for c in fn.tasks.values():
            c.stopping = True
        fn.queue_signal.fire()

    def environment_id(self, name: str) -> str:
        if name not in self._environment_ids:
            digest = hashlib.sha256(name.encode()).hexdigest()[:22]
            self._environment_ids[name] = f"en-{digest}"
        return self._environment_ids[name]

    # -- serving ---------------------------------------------------------------------

    async def listen(self, address: str, host: str) -> str:
        """Serve clients on `address` (a port on `host`, or unix:PATH); return the URL
        for MODAL_SERVER_URL."""
        if not self.large_blobs.base_url:
            await self.large_blobs.start(host)
            self._sweeper = asyncio.ensure_future(self._sweep_deadlines())
        server = Server([servicer.build_servicer(self.grpc, self.handlers, None)])
        servicer.guard_clients(server, self.server_token)
        if address.startswith("unix:"):
            path = Path(address[5:]).expanduser()
            path.unlink(missing_ok=True)
            await server.start(path=str(path))
            self._unix_paths.append(path)
            url = f"unix://{path}"
        else:
            await server.start(host, int(address))
            port = server._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
            url = f"http://{host}:{port}"
        self._servers.append(server)
        return url

    async def serve_container(self, container: Container) -> Server:
        server = Server([servicer.build_servicer(self.grpc, self.handlers, container.task_id)])
        container.socket_path.unlink(missing_ok=True)
        await server.start(path=str(container.socket_path))
        return server

    async def _sweep_deadlines(self) -> None:
        """Inputs past their function's timeout= fail with GENERIC_STATUS_TIMEOUT (the client
        raises FunctionTimeoutError); the container running one is killed, since the
        input cannot be interrupted from outside, and what else it held runs again."""
        while True:
            await asyncio.sleep(0.25)
            now = time.monotonic()
            for container in list(self.containers.values()):
                late = [p for p in container.running.values() if 0 < p.deadline < now]
                if not late or container.stopping:
                    continue
                fn = self.functions.get(container.function_id)
                timeout = fn.definition.timeout_secs if fn is not None else 0
                for pending in late:
                    del container.running[pending.input_id]
                    result = self.pb2.GenericResult(
                        status=self.pb2.GenericResult.GENERIC_STATUS_TIMEOUT,
                        exception=f"Function call timed out after {timeout} s (timeout=)",
                    )
                    self.finish(pending, result, container.task_id)
                if fn is not None:
                    for pending in container.running.values():
                        pending.deadline = 0.0
                        fn.queue.appendleft(pending)
                    container.running.clear()
                    fn.queue_signal.fire()
                container.stopping = True
                if container.handle is not None:
                    container.handle.kill()
                if fn is not None:
                    self.ensure_containers(fn)

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
        for app in list(self.apps.values()):
            if not app.done:
                await self.stop_app(app)
        for server in self._servers:
            server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 2)
        for path in self._unix_paths:
            path.unlink(missing_ok=True)
        self.large_blobs.close()

    # -- images and containers -------------------------------------------------------

    async def build_image(self, image: WireImage) -> Any:
        if image.built is not None:
            return image.built
        task = self._image_builds.get(image.image_id)
        if task is None:
            spec = {
                "python_version": image.python_version,
                "steps": [
                    {
                        "type": "pip_install",
                        "packages": [f"modal=={image.client_version}", *image.packages],
                        "extra_index_url": None,
                        "extra_options": "",
                        "find_links": None,
                        "index_url": None,
                        "pre": False,
                    }
                ],
                "files": [],
            }
            task = asyncio.ensure_future(self._build(spec, lambda line: None))
            self._image_builds[image.image_id] = task
        try:
            image.built = await asyncio.shield(task)
        finally:
            if task.done():
                self._image_builds.pop(image.image_id, None)
        return image.built

    def ensure_containers(self, fn: WireFunction) -> None:
        """Start a container while inputs wait for one, up to the function's limit."""
        limit = fn.definition.concurrency_limit or fn.definition.autoscaler_settings.max_containers
        limit = min(limit or _MAX_CONTAINERS, _MAX_CONTAINERS)
        live = sum(1 for c in fn.tasks.values() if not c.stopping) + fn.starting
        busy = sum(len(c.running) for c in fn.tasks.values())
        if live >= limit or (live > 0 and len(fn.queue) <= live - busy):
            return
        fn.starting += 1
        task = asyncio.ensure_future(self._start_container(fn))
        self._starts.add(task)
        task.add_done_callback(self._starts.discard)

    async def _start_container(self, fn: WireFunction) -> None:
        try:
            container = await containers.start(self, fn.function_id)
            fn.tasks[container.task_id] = container
        except Exception as exc:
            log.exception("modal-wire: starting a container of %s failed", fn.tag)
            self.apps[fn.app_id].log("", fn.function_id, containers.FD_STDERR, f"{exc}\n")
        finally:
            fn.starting -= 1

    def mount_metadata(self, mount_id: str) -> Any:
        digest = next((d for d, m in self.mount_by_digest.items() if m == mount_id), "")
        return self.pb2.MountHandleMetadata(content_checksum_sha256_hex=digest)

    async def container_gone(self, container: Container, code: int) -> None:
        self.containers.pop(container.task_id, None)
        containers.clean(container)
        fn = self.functions.get(container.function_id)
        if fn is None:
            return
        fn.tasks.pop(container.task_id, None)
        if container.stopping:
            return
        # A crash fails what it held; one before its first input (an import error, say)
        # fails every waiting input too, rather than starting container after container.
        tail = "".join(container.last_lines).strip()
        status = self.pb2.GenericResult
        reason = f"the container of {fn.tag} exited with code {code}"
        failed = list(container.running.values())
        kind = status.GENERIC_STATUS_FAILURE
        if not container.took_input:
            failed += list(fn.queue)
            fn.queue.clear()
            kind = status.GENERIC_STATUS_INIT_FAILURE
        for pending in failed:
            result = status(status=kind, exception=reason, traceback=tail)
            self.finish(pending, result, container.task_id)

    def finish(self, pending: Any, result: Any, task_id: str, **extra: Any) -> None:
        fc = self.calls.get(pending.call_id)
        if fc is None or pending.input_id in fc.finished:
            return
        fc.finished.add(pending.input_id)
        fc.outputs.append(
            self.pb2.FunctionGetOutputsItem(
                idx=pending.idx, input_id=pending.input_id, result=result, task_id=task_id, **extra
            )
        )
        fc.signal.fire()

    async def stop_app(self, app: WireApp) -> None:
        app.done = True
        app.stopped_at = time.time()
        app.state = self.pb2.APP_STATE_STOPPED
        if app.name and self.deployed.get((app.environment, app.name)) == app.app_id:
            del self.deployed[(app.environment, app.name)]
            self.previous[(app.environment, app.name)] = app.app_id
        doomed = [c for c in self.containers.values() if c.app_id == app.app_id]
        for c in doomed:
            c.stopping = True
        for fn_id in app.function_ids.values():
            fn = self.functions.get(fn_id)
            if fn is not None:
                fn.queue_signal.fire()
        await asyncio.gather(*(containers.stop(c, 5.0) for c in doomed))
        app.log_signal.fire()
