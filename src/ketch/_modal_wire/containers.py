"""Containers for functions created through the Modal front end.

Each is a ketch container started by the server's backend (sandboxed as every container
is: bubblewrap where it works, KETCH_SANDBOX) that runs Modal's own container runtime
(`python -m modal._container_entrypoint`) with the interpreter of a ketch-built image
environment holding the client's `modal` version, its code mounts at /root, and a unix
socket of its own on which the front end serves it (the socket is its identity: containers
send no credentials). Placement and scaling are this front end's own for now, not ketch's
scheduler's (docs/modal-wire.md)."""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ketch._modal_wire.state import PendingInput, new_id

if TYPE_CHECKING:
    from grpclib.server import Server

    from ketch._backends.base import ContainerHandle
    from ketch._modal_wire.core import Wire

log = logging.getLogger("ketch.modal_wire")

# Modal's FileDescriptor values for log lines.
FD_STDOUT = 1
FD_STDERR = 2


@dataclass
class Container:
    task_id: str
    function_id: str
    app_id: str
    root: Path
    socket_path: Path
    handle: ContainerHandle | None = None
    server: Server | None = None
    hello: bool = False
    stopping: bool = False
    running: dict[str, PendingInput] = field(default_factory=dict)
    took_input: bool = False
    started_at: float = field(default_factory=time.time)
    # When it last held no input (monotonic): for scaling down idle containers.
    idle_since: float = field(default_factory=time.monotonic)
    last_lines: collections.deque[str] = field(default_factory=lambda: collections.deque(maxlen=20))
    pumps: list[asyncio.Task[None]] = field(default_factory=list)


def lay_out_mounts(wire: Wire, mount_ids: list[str], root: Path) -> Path:
    """Write the mounts' files under `root`, Modal's remote paths made relative to it, and
    return the directory the user's code expects to run in (its /root)."""
    for mount_id in mount_ids:
        for filename, sha, mode in wire.mounts[mount_id]:
            dest = root / filename.lstrip("/")
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(wire.blobs.get(sha))
            if mode:
                os.chmod(dest, mode & 0o777 or 0o644)
    home = root / "root"
    home.mkdir(parents=True, exist_ok=True)
    return home


async def start(wire: Wire, function_id: str) -> Container:
    from ketch._backends.base import ContainerSpec
    from ketch._server import launch

    fn = wire.functions[function_id]
    definition = fn.definition
    image = wire.images[definition.image_id]
    built = await wire.build_image(image)
    task_id = new_id("ta")
    root = wire.work_dir / task_id
    root.mkdir(parents=True)
    # The container's socket and arguments in a directory of its own, the only part of the
    # sockets directory its sandbox shows it.
    sock_dir = wire.sockets_dir / f"mw-{task_id[3:15]}"
    sock_dir.mkdir(mode=0o700)
    container = Container(task_id, function_id, fn.app_id, root, sock_dir / "modal.sock")
    wire.containers[task_id] = container
    container.server = await wire.serve_container(container)
    source = lay_out_mounts(wire, list(definition.mount_ids), root)
    args_path = sock_dir / "container_arguments.bin"
    args_path.write_bytes(container_arguments(wire, fn, task_id).SerializeToString())
    env = {
        **launch.python_env(built),
        **dict(built.env),
        "HOME": "/root",
        "LANG": "C.UTF-8",
        "PYTHONPATH": "/root",
        "MODAL_CONTAINER_ARGUMENTS_PATH": str(args_path),
        "MODAL_SERVER_URL": f"unix://{container.socket_path}",
        "MODAL_IS_REMOTE": "1",
        "MODAL_TASK_ID": task_id,
        "MODAL_CONFIG_PATH": "/tmp/.modal.toml",
    }
    sandbox = launch.image_sandbox(
        built,
        hide=(wire.state_dir.parent, wire.sockets_dir),
        runtime_paths=(),
        files_dir=None,
        source_dir=str(source),
        read_write=[(str(sock_dir), str(sock_dir))],
    )
    resources = definition.resources
    spec = ContainerSpec(
        container_id=task_id,
        python=built.python,
        env=env,
        cwd=Path("/root"),
        cpu=resources.milli_cpu / 1000 if resources.milli_cpu else None,
        memory_mb=resources.memory_mb or None,
        sandbox=sandbox,
        entry=("-m", "modal._container_entrypoint"),
    )
    app = wire.apps[fn.app_id]

    def sink(stream: str, line: str) -> None:
        fd = FD_STDERR if stream != "stdout" else FD_STDOUT
        if fd == FD_STDERR:
            container.last_lines.append(line + "\n")
        app.log(task_id, function_id, fd, line + "\n")

    container.handle = await wire.backend.start(spec, sink)
    container.pumps.append(asyncio.ensure_future(_watch(wire, container)))
    return container


def container_arguments(wire: Wire, fn: Any, task_id: str) -> Any:
    pb2 = wire.pb2
    app = wire.apps[fn.app_id]
    layout = wire.layout(app)
    # Every object the function depends on (its image, mounts, other functions) must be
    # in the layout: the runtime hydrates each one by id, with its metadata where it has one.
    listed = {o.object_id for o in layout.objects}
    for dep in fn.definition.object_dependencies:
        if dep.object_id in listed:
            continue
        listed.add(dep.object_id)
        obj = pb2.Object(object_id=dep.object_id)
        if dep.object_id in wire.mounts:
            obj.mount_handle_metadata.CopyFrom(wire.mount_metadata(dep.object_id))
        layout.objects.append(obj)
    return pb2.ContainerArguments(
        task_id=task_id,
        function_id=fn.function_id,
        app_id=fn.app_id,
        function_def=fn.definition,
        environment_name=app.environment,
        app_layout=layout,
    )


async def _watch(wire: Wire, container: Container) -> None:
    assert container.handle is not None
    reason, code = await container.handle.wait()
    if not container.stopping:
        log.info("modal-wire container %s: %s (%s)", container.task_id, reason, code)
    await wire.container_gone(container, code if code is not None else -1)


async def stop(container: Container, grace: float) -> None:
    """Ask the container to finish (a kill switch on its next poll for inputs), then stop
    it through the backend (SIGTERM, then SIGKILL after `grace`)."""
    container.stopping = True
    handle = container.handle
    if handle is None:
        return
    waiter = container.pumps[0] if container.pumps else None
    if waiter is not None:
        done, _ = await asyncio.wait([waiter], timeout=grace)
        if done:
            return
    await handle.stop(grace)


def clean(container: Container) -> None:
    if container.server is not None:
        container.server.close()
    shutil.rmtree(container.socket_path.parent, ignore_errors=True)
    shutil.rmtree(container.root, ignore_errors=True)
