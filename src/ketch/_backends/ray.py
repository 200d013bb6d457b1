"""Containers as named Ray actors on any node of a Ray cluster (`KETCH_BACKEND=ray`).

Each container is one actor, `ketch-<container id>`, holding the function's CPUs, memory
and GPUs in Ray's accounting, with `max_restarts=0`: a container that dies is replaced by
ketch's scheduler, never by Ray. The actor starts the runtime under `ray_guard`, a process
group of its own that dies with the actor or with its node's raylet. The runtime connects
back to the server's call port over TCP with its own credential, as a local container does
over the unix socket.

Actors are owned by the server's Ray driver and are not detached: when the server stops
or dies, Ray ends them, and a restarted server starts new containers (docs/ray.md).

This is the only module of ketch that imports `ray` (an optional extra: `ketch[ray]`).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import signal
import socket
from collections.abc import Callable
from typing import Any

import ray

import ketch
from ketch._backends.base import (
    EXITED,
    KILLED,
    STARTUP_FAILED,
    Backend,
    Capacity,
    ContainerHandle,
    ContainerSpec,
    LogSink,
)
from ketch._backends.ray_actor import ContainerActor
from ketch.config import Config
from ketch.exception import InvalidError

log = logging.getLogger("ketch.ray")

# Makes a new actor for a container and starts it: (actor handle, its start's ObjectRef).
Placer = Callable[[], tuple[Any, Any]]

# What a container reserves of a node's CPUs when its function names no cpu= (Modal's
# default share of a core).
DEFAULT_CPU = 0.125
# After kill(), how long wait() gives the actor to confirm its end (and send its last
# lines) before the container counts as gone: a dead node never answers.
_KILL_CONFIRM = 5.0
NAMESPACE = "ketch"
# An actor lost before its container started is placed again this many times in all,
# after a pause that doubles (Ray needs a moment to mark a dead node as dead).
_PLACEMENTS = 4
_REPLACE_DELAY = 0.5
# How long the cluster's address may take to accept a connection at the server's start.
_REACH_TIMEOUT = 5.0
# A container that Ray has not placed after this many seconds says what it waits for.
_PLACEMENT_NOTE = 3.0
# Ray's own functions are partly untyped; called through this name, mypy stays strict here.
_ray: Any = ray


def actor_options(spec: ContainerSpec) -> dict[str, Any]:
    """Ray's options for the actor of `spec`: its name, resources and placement."""
    options: dict[str, Any] = {
        "name": f"ketch-{spec.container_id}",
        "namespace": NAMESPACE,
        "num_cpus": spec.cpu if spec.cpu is not None else DEFAULT_CPU,
        "num_gpus": len(spec.gpus),
        "max_restarts": 0,
        "max_task_retries": 0,
        # Containers of one function go to different nodes where they can: a node's loss
        # then takes only part of a pool.
        "scheduling_strategy": "SPREAD",
    }
    if spec.memory_mb is not None:
        options["memory"] = spec.memory_mb * 2**20
    return options


def describe_resources(options: dict[str, Any]) -> str:
    """What an actor reserves, in words: "0.5 CPU, 512 MiB memory, 1 GPU"."""
    parts = [f"{options['num_cpus']:g} CPU"]
    if "memory" in options:
        parts.append(f"{options['memory'] // 2**20} MiB memory")
    if options.get("num_gpus"):
        parts.append(f"{options['num_gpus']} GPU")
    return ", ".join(parts)


async def _awaited(ref: Any) -> Any:
    return await ref


def exit_reason(code: int | None, killed: bool) -> str:
    if killed or code == -signal.SIGKILL or code is None:
        return KILLED
    return EXITED


def call_host(server_host: str, node_ip: str) -> str:
    """The address containers dial for the call port: the server's own, unless it listens
    on every address, then the server's node address in the cluster."""
    try:
        unspecified = ipaddress.ip_address(server_host).is_unspecified
    except ValueError:
        return server_host  # a host name
    return node_ip if unspecified else server_host


class RayContainer(ContainerHandle):
    """The server's side of one container actor."""

    def __init__(self, spec: ContainerSpec, place: Placer, log: LogSink) -> None:
        self.container_id = spec.container_id
        self._wants = describe_resources(actor_options(spec))
        self._place = place
        self.actor: Any = None
        self.node: str | None = None  # the Ray node id, once the actor runs
        self.node_ip: str | None = None
        self.pid: int | None = None  # on its node
        self._log = log
        self._killed = asyncio.Event()
        self._ended: asyncio.Future[tuple[str, int | None]] = (
            asyncio.get_running_loop().create_future()
        )
        self._task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        try:
            result = await self._life()
        except Exception as exc:  # an actor lost with its node
            self._log("system", f"container lost: {_ray_error(exc)}")
            result = (KILLED, None)
        if not self._ended.done():
            self._ended.set_result(result)

    async def _placed(self) -> dict[str, Any]:
        """Place the actor and start the container in it. An actor lost before the runtime
        started (its node died while Ray still placed work there) is placed again: nothing
        of the function ran, so it is no start-up failure of the function (R5)."""
        for attempt in range(_PLACEMENTS):
            try:
                # Raises at once while the name of a lost actor is not free yet.
                self.actor, started = self._place()
                info: dict[str, Any] = await self._told_while_waiting(started)
                return info
            except Exception as exc:
                if self._killed.is_set() or attempt == _PLACEMENTS - 1:
                    raise
                self._log("system", f"placing the container again: {_ray_error(exc)}")
                if self.actor is not None:
                    with contextlib.suppress(Exception):
                        ray.kill(self.actor, no_restart=True)
                await asyncio.sleep(_REPLACE_DELAY * 2**attempt)
        raise AssertionError("unreachable")

    async def _told_while_waiting(self, started: Any) -> Any:
        """The start's result; a start that Ray has not placed after a few seconds says
        so in the container's log, with what it waits for."""
        task = asyncio.ensure_future(_awaited(started))
        done, _ = await asyncio.wait({task}, timeout=_PLACEMENT_NOTE)
        if not done:
            self._log(
                "system",
                f"waiting for a Ray node with {self._wants} free "
                "(no node of the cluster has it now; `ketch node list` shows them)",
            )
        return await task

    async def _life(self) -> tuple[str, int | None]:
        info = await self._placed()
        self.node, self.node_ip, self.pid = info["node_id"], info["node_ip"], info.get("pid")
        if info["refused"]:
            self._log("system", info["refused"])
            ray.kill(self.actor, no_restart=True)  # it holds its node's resources
            return STARTUP_FAILED, None
        pump = asyncio.ensure_future(self._pump())
        try:
            code: int | None = await self.actor.wait.remote()
        except BaseException:
            pump.cancel()  # the actor is gone: so is what it had not sent
            raise
        with contextlib.suppress(Exception):
            await asyncio.wait_for(pump, 2.0)
        ray.kill(self.actor, no_restart=True)  # its process is done: free its resources
        return exit_reason(code, self._killed.is_set()), code

    async def _pump(self) -> None:
        while True:
            batch = await self.actor.logs.remote()
            if batch is None:
                return
            for stream, line in batch:
                self._log(stream, line)

    async def stop(self, grace: float) -> None:
        if self._ended.done():
            return
        if self.pid is None:
            # Not running yet (Ray may still be placing it): nothing to drain.
            self.kill()
            await self.wait()
            return
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.actor.signal.remote(signal.SIGTERM), grace)
        try:
            await asyncio.wait_for(asyncio.shield(self._ended), grace)
        except TimeoutError:
            self.kill()
            await self.wait()

    def kill(self) -> None:
        self._killed.set()
        # The worker dies, its pipe to the guard closes, and the guard kills the group.
        if self.actor is not None:
            with contextlib.suppress(Exception):
                ray.kill(self.actor, no_restart=True)

    async def wait(self) -> tuple[str, int | None]:
        killed: asyncio.Future[Any] = asyncio.ensure_future(self._killed.wait())
        try:
            await asyncio.wait({killed, self._ended}, return_when=asyncio.FIRST_COMPLETED)
            if not self._ended.done():
                # Killed: its node may be gone and never say so; give it a moment.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(self._ended), _KILL_CONFIRM)
        finally:
            killed.cancel()
        if self._ended.done():
            return self._ended.result()
        self._task.cancel()
        return KILLED, None


def _check_reachable(address: str) -> None:
    """Refuse a cluster address nothing answers at, at once: Ray itself retries for
    minutes, and the server would hang at its start saying nothing."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or "://" in address:
        return  # "auto", or a ray:// client address: Ray's own checks apply
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=_REACH_TIMEOUT).close()
    except OSError as exc:
        raise InvalidError(
            f"cannot reach the Ray cluster at {address!r} (KETCH_RAY_ADDRESS): {exc}; "
            "start one with `ray start --head` (docs/ray.md)"
        ) from exc


def _ray_error(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"


class RayBackend(Backend):
    """Starts containers as actors in the Ray cluster at `config.ray_address`."""

    def __init__(self, config: Config | None = None) -> None:
        config = config or Config()
        self.config = config
        address = config.ray_address or "auto"
        _check_reachable(address)
        try:
            ray.init(
                address=address,
                namespace=NAMESPACE,
                log_to_driver=False,
                logging_level=logging.WARNING,
                configure_logging=False,
            )
        except ConnectionError as exc:
            raise InvalidError(
                f"cannot reach the Ray cluster at {address!r} (KETCH_RAY_ADDRESS): {exc}; "
                "start one with `ray start --head` (docs/ray.md)"
            ) from exc
        self._actor_cls: Any = ray.remote(ContainerActor)
        self.node_ip = _ray.util.get_node_ip_address()

    def call_address(self, unix_path: str, host: str, port: int) -> str:
        host = call_host(host, self.node_ip)
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    async def start(self, spec: ContainerSpec, log: LogSink) -> RayContainer:
        options = actor_options(spec)
        env = {**spec.env, "PYTHONUNBUFFERED": "1"}
        argv = [str(spec.python), *spec.entry]
        if spec.volumes:
            # This increment: the volume directory is the server's, reached as a path on
            # the node (one machine, or a shared filesystem; docs/ray.md).
            from ketch._backends.mounts import volume_argv

            argv, told = volume_argv(spec.volumes, argv)
            env.update(told)

        def place() -> tuple[Any, Any]:
            actor = self._actor_cls.options(**options).remote(spec.container_id)
            return actor, actor.start.remote(argv, env, str(spec.cwd), ketch.__version__)

        return RayContainer(spec, place, log)

    def capacity(self) -> Capacity:
        total = _ray.cluster_resources()
        gpus = tuple(
            key.removeprefix("accelerator_type:")
            for key in total
            if key.startswith("accelerator_type:")
        )
        return Capacity(
            cpus=float(total.get("CPU", 0.0)),
            memory_mb=int(total.get("memory", 0) // 2**20),
            gpus=gpus,
        )

    def nodes(self) -> list[dict[str, Any]]:
        rows = []
        for node in _ray.nodes():
            res = node.get("Resources", {})
            rows.append(
                {
                    "node_id": node["NodeID"],
                    "address": node.get("NodeManagerAddress", ""),
                    "alive": bool(node.get("Alive")),
                    "cpus": float(res.get("CPU", 0.0)),
                    "memory_mb": int(res.get("memory", 0) // 2**20),
                    "gpus": _gpus_by_type(res),
                    "resources": {
                        k: v
                        for k, v in res.items()
                        if not k.startswith(("node:", "accelerator_type:"))
                        and k not in ("CPU", "GPU", "memory", "object_store_memory")
                    },
                }
            )
        return rows

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            ray.shutdown()


def _gpus_by_type(res: dict[str, float]) -> dict[str, int]:
    count = int(res.get("GPU", 0))
    types = [k.removeprefix("accelerator_type:") for k in res if k.startswith("accelerator_type:")]
    if not count:
        return {}
    return {types[0] if len(types) == 1 else "any": count}
