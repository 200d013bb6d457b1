"""Routes inputs to containers: per-pool FIFO queues, dispatch to free slots, container
lifecycle (start, ready, crash, timeout, scale-down), retries, and spawned-call results."""

from __future__ import annotations

import asyncio
import base64
import collections
import contextlib
import dataclasses
import hashlib
import json
import logging
import pickle
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ketch._backends import gpu as gpus
from ketch._backends.base import Backend, ContainerSpec, ForkSpec
from ketch._server.autoscaling import PoolView, containers_to_retire, desired_containers
from ketch._server.errors import error_payload
from ketch._server.logs import LogHub
from ketch._server.model import Container, FunctionDef, Input, Pool
from ketch._server.store import Store
from ketch._utils.ids import new_id
from ketch._utils.wire import Channel
from ketch.exception import (
    ExecutionError,
    FunctionTimeoutError,
    InputCancellation,
    NotFoundError,
    ResourceExhaustedError,
)

if TYPE_CHECKING:
    from ketch._server.crypto import SecretBox
    from ketch._server.tracing import Tracing

log = logging.getLogger("ketch.scheduler")

# A run lost to container deaths is repeated this many times before the input fails.
MAX_CRASH_RERUNS = 3
# Undelivered results for a disconnected client are kept this long for its return.
UNDELIVERED_TTL = 600.0


class Scheduler:
    def __init__(
        self,
        *,
        backend: Backend,
        store: Store,
        logs: LogHub,
        call_addr: str,
        token: str,
        result_ttl: float,
        secret_env: Callable[[FunctionDef], dict[str, str]],
        stop_grace: float = 5.0,
        runtime_paths: tuple[str, str] = ("", ""),
        sockets_dir: Path | None = None,
        max_queue: int = 10_000,
    ) -> None:
        self.backend = backend
        self.store = store
        self.logs = logs
        self.call_addr = call_addr
        self.token = token
        self.result_ttl = result_ttl
        self.secret_env = secret_env
        self.stop_grace = stop_grace
        self.runtime_core, self.runtime_web = runtime_paths
        self.sockets_dir = sockets_dir or Path(tempfile.mkdtemp(prefix="ketch-sock-"))
        # Inputs that may wait in one pool's queue (S3): past it new ones are refused.
        self.max_queue = max(1, max_queue)
        # Seals the inline secrets of spawned calls' stored requests (set by the server).
        self.box: SecretBox | None = None
        self._gpu_inventory: gpus.Inventory | None = None  # discovered on first need
        self.gpu_owner: dict[int, str] = {}  # GPU index -> container holding it
        self.functions: dict[str, FunctionDef] = {}
        self.pools: dict[str, Pool] = {}
        self.containers: dict[str, Container] = {}
        self.inputs: dict[str, Input] = {}
        self.clients: dict[str, Channel] = {}
        self.undelivered: dict[str, dict[str, tuple[float, list[dict[str, Any]]]]] = (
            collections.defaultdict(dict)
        )
        self.call_waiters: dict[str, list[asyncio.Future[None]]] = collections.defaultdict(list)
        self._tasks: set[asyncio.Task[Any]] = set()
        self.counters: collections.Counter[str] = collections.Counter()
        self._tick_failed: set[str] = set()  # pools whose periodic work failed (logged once)
        # Told the web address of each container that goes, so pooled connections to it close.
        self.on_container_gone: Callable[[str], None] | None = None
        # Told of every finished input and web request (call records, latency histograms).
        self.on_input_done: Callable[[Input, bool], None] | None = None
        self.on_web_done: Callable[[Input, str, int], None] | None = None
        # Spans for inputs and web requests (O5); None, and never looked at further, when off.
        self.tracing: Tracing | None = None

    # -- functions ----------------------------------------------------------------------
    def register(self, fdef: FunctionDef) -> None:
        """Make `fdef` the live version of its function; older pools drain and go."""
        self.functions[fdef.function_id] = fdef
        for pool in list(self.pools.values()):
            if pool.function.function_id == fdef.function_id and pool.function is not fdef:
                self._retire_pool(pool)
        if int(fdef.options.get("min_containers") or 0) > 0:
            # Warm containers are wanted before any traffic, so the pool must exist now.
            self._reconcile(self._pool_for(fdef, None))

    def unregister_app(self, app_id: str) -> None:
        for fid in [f for f, d in self.functions.items() if d.app_id == app_id]:
            del self.functions[fid]
        for pool in list(self.pools.values()):
            if pool.function.app_id == app_id:
                err = error_payload(ExecutionError(f"app {pool.function.app_name!r} was stopped"))
                while pool.queue:
                    self._finish(pool.queue.popleft(), ok=False, error=err)
                for c in list(pool.containers.values()):
                    for inp in list(c.inflight.values()):
                        self._finish(inp, ok=False, error=err)
                self._retire_pool(pool)

    def _retire_pool(self, pool: Pool) -> None:
        pool.retired = True
        self.backend.retire(_fork_group(pool.function))  # its fork-server template goes
        # Inputs still queued for the old version move to the new one.
        newer = self.functions.get(pool.function.function_id)
        while pool.queue and newer is not None and newer is not pool.function:
            inp = pool.queue.popleft()
            inp.function = newer
            new_pool = self._pool_for(newer, inp.request.get("params"), inp.request.get("options"))
            inp.function = new_pool.function
            inp.pool_key = new_pool.key
            self._enqueue(inp)
        for c in list(pool.containers.values()):
            if not c.inflight:
                self._stop_container(c, "retired")

    def _pool_for(
        self, fdef: FunctionDef, params: bytes | None, overrides: dict[str, Any] | None = None
    ) -> Pool:
        digest = hashlib.sha256(params).hexdigest()[:16] if params else "-"
        if overrides:
            # Cls.with_options / with_concurrency / with_batching: a pool of its own (A6).
            blob = json.dumps(overrides, sort_keys=True, default=str).encode()
            digest += "+" + hashlib.sha256(blob).hexdigest()[:12]
        key = f"{fdef.function_id}:{fdef.version}:{digest}"
        pool = self.pools.get(key)
        if pool is None:
            function = with_overrides(fdef, overrides) if overrides else fdef
            pool = self.pools[key] = Pool(key=key, function=function, params=params)
        return pool

    # -- inputs -------------------------------------------------------------------------
    def submit(
        self,
        function_id: str,
        iid: str,
        request: dict[str, Any],
        kind: str,
        client_id: str | None,
        *,
        spawned: bool = False,
    ) -> None:
        existing = self.inputs.get(iid)
        if existing is not None:
            # A client re-sending after a reconnect: the input already runs; just re-attach.
            existing.client_id = client_id or existing.client_id
            return
        if client_id is not None and iid in self.undelivered.get(client_id, {}):
            self._flush_undelivered(client_id, only=iid)
            return
        fdef = self.functions.get(function_id)
        if fdef is None:
            inp = Input(iid, _missing(function_id), "", request, kind, client_id, spawned)
            self._finish(
                inp,
                ok=False,
                error=error_payload(NotFoundError(f"function {function_id} is not deployed")),
            )
            return
        pool = self._pool_for(fdef, request.get("params"), request.get("options"))
        inp = Input(iid, pool.function, pool.key, request, kind, client_id, spawned)
        if self.tracing is not None:
            self.tracing.input_started(inp)
        # A spawned call was checked against the bound when `spawn` accepted it; one that
        # a restart re-queues was accepted then and must not be refused now.
        full = None if spawned else self._queue_full(pool)
        if full is not None:
            self._finish(inp, ok=False, error=error_payload(full))
            return
        self.inputs[iid] = inp
        self.counters["inputs"] += 1
        self._enqueue(inp)

    def _enqueue(self, inp: Input, *, front: bool = False) -> None:
        if inp.done:
            return
        pool = self.pools.get(inp.pool_key)
        if pool is None or pool.retired:
            fdef = self.functions.get(inp.function.function_id)
            if fdef is None:
                self._finish(
                    inp,
                    ok=False,
                    error=error_payload(ExecutionError("the function's app is stopped")),
                )
                return
            pool = self._pool_for(fdef, inp.request.get("params"), inp.request.get("options"))
            inp.function = pool.function
            inp.pool_key = pool.key
        if front:
            pool.queue.appendleft(inp)
        else:
            inp.queued_at = time.monotonic()
            pool.queue.append(inp)
        self._dispatch(pool)

    def _queue_full(self, pool: Pool) -> ResourceExhaustedError | None:
        """The refusal for a new input when its pool's queue is at the bound (S3)."""
        if len(pool.queue) < self.max_queue:
            return None
        self.counters["queue_full"] += 1
        return ResourceExhaustedError(
            f"{pool.function.tag}: too many inputs waiting ({len(pool.queue)} queued, the "
            f"limit is {self.max_queue}); retry later, or raise max_containers / "
            "@concurrent(max_inputs=) or the server's max_queue (KETCH_MAX_QUEUE)"
        )

    def _dispatch(self, pool: Pool) -> None:
        while pool.queue and not pool.function.batch_size:
            ready = [c for c in pool.containers.values() if c.state == "ready" and c.free_slots]
            if not ready:
                break
            c = max(ready, key=lambda c: c.free_slots)
            while pool.queue and c.free_slots > 0:
                self._assign(pool.queue.popleft(), c)
        if pool.function.batch_size:
            self._dispatch_batches(pool)
        # Scaling decisions are batched per loop turn: a burst of submits costs one.
        if not pool.reconcile_scheduled:
            pool.reconcile_scheduled = True
            asyncio.get_running_loop().call_soon(self._reconcile_later, pool)

    def _reconcile_later(self, pool: Pool) -> None:
        pool.reconcile_scheduled = False
        self._reconcile(pool)

    def _dispatch_batches(self, pool: Pool) -> None:
        """@batched (S5): up to max_batch_size queued inputs go to an idle container as one
        batch; a short batch waits until the oldest input has waited wait_ms."""
        size = pool.function.batch_size
        wait = float(pool.function.options.get("batch_wait_ms") or 0) / 1000
        while pool.queue:
            idle = [c for c in pool.containers.values() if c.state == "ready" and not c.inflight]
            if not idle:
                return
            if len(pool.queue) < size:
                due = pool.queue[0].queued_at + wait - time.monotonic()
                if due > 0:
                    if pool.batch_timer is None:
                        pool.batch_timer = asyncio.get_running_loop().call_later(
                            due, self._batch_due, pool
                        )
                    return
            c = idle[0]
            batch = [pool.queue.popleft() for _ in range(min(size, len(pool.queue)))]
            for inp in batch:
                self._assign(inp, c, send=False)
            assert c.channel is not None
            c.channel.send(
                {
                    "t": "batch",
                    "kind": "call",
                    "inputs": [
                        {
                            "iid": inp.iid,
                            "args": inp.request.get("args"),
                            "method": inp.request.get("method"),
                        }
                        for inp in batch
                    ],
                }
            )

    def _batch_due(self, pool: Pool) -> None:
        pool.batch_timer = None
        self._dispatch(pool)

    def _assign(self, inp: Input, c: Container, *, send: bool = True) -> None:
        assert c.channel is not None
        inp.container = c
        inp.started = time.monotonic()
        c.inflight[inp.iid] = inp
        c.assigned += 1
        # A deadline, not a timer per input: one sweep a quarter second checks them all.
        inp.deadline = inp.started + float(inp.function.options.get("timeout") or 300)
        if self.tracing is not None:
            self.tracing.assigned(inp, c)  # before the send: the input carries its context
        if inp.future is not None:
            if not inp.future.done():
                inp.future.set_result(c.web_addr or "")
            return
        if send:
            c.channel.send({"t": "input", "iid": inp.iid, "kind": inp.kind, **inp.request})

    def _reconcile(self, pool: Pool) -> None:
        if pool.retired:
            return
        opts = pool.function.options
        want = desired_containers(_view(pool))
        live = pool.live()
        gpu = opts.get("gpu")
        pool.waiting_reason = None
        if pool.queue and not live:
            want = max(want, 1)
        if time.monotonic() < pool.backoff_until and not pool.queue:
            return
        for _ in range(want - len(live)):
            held: tuple[int, ...] = ()
            if gpu:
                # S7: a GPU function never runs without its GPUs; its inputs wait, saying why.
                taken = self._take_gpus(pool, gpu)
                if taken is None:
                    break
                held = taken
            # Registered now, not in the task: the next reconcile must already count it.
            c = Container(cid=new_id("ta"), pool=pool, gpus=held)
            for index in held:
                self.gpu_owner[index] = c.cid
            pool.containers[c.cid] = c
            self.containers[c.cid] = c
            self._spawn_task(self._start_container(c))

    def gpu_inventory(self) -> gpus.Inventory:
        if self._gpu_inventory is None:
            self._gpu_inventory = gpus.discover()
        return self._gpu_inventory

    def _take_gpus(self, pool: Pool, request: str | list[str]) -> tuple[int, ...] | None:
        """Free GPUs meeting the request, or None with the pool's waiting reason set."""
        inv = self.gpu_inventory()
        got = gpus.assign(request, inv.devices, frozenset(self.gpu_owner))
        if got is None:
            what = gpus.request_text(request)
            if gpus.could_ever_fit(request, inv.devices):
                pool.waiting_reason = (
                    f"waiting: no GPU of type {what} free (all matching "
                    "GPUs are held by other containers)"
                )
            else:
                pool.waiting_reason = (
                    f"waiting: no GPU of type {what} on this host (GPUs here: {inv.describe()})"
                )
        return got

    def _release_gpus(self, c: Container) -> None:
        for index in c.gpus:
            if self.gpu_owner.get(index) == c.cid:
                del self.gpu_owner[index]
        # Pools waiting for a GPU may start a container now.
        for pool in list(self.pools.values()):
            if pool.queue and pool.function.options.get("gpu") and not pool.retired:
                asyncio.get_running_loop().call_soon(self._reconcile, pool)

    # -- containers ---------------------------------------------------------------------
    def _spawn_task(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _start_container(self, c: Container) -> None:
        fdef = c.pool.function
        cid = c.cid
        self.counters["cold_starts"] += 1
        try:
            env = dict(fdef.image.env)
            env.update(self.secret_env(fdef))
            env.update(fdef.spec.get("override_env") or {})  # with_options(secrets=[inline])
            from ketch._server.volumes import container_mounts

            volumes = container_mounts(fdef.volumes, fdef.spec.get("volumes") or [])
        except Exception as exc:
            self._startup_failed(c, error_payload(exc))
            self._forget(c)
            return
        env.update(
            {
                "KETCH_CONTAINER_ID": cid,
                "KETCH_CALL_ADDR": self.call_addr,
                "KETCH_TOKEN": self.token,
                "KETCH_APP_ID": fdef.app_id,
                "KETCH_APP_NAME": fdef.app_name,
                "KETCH_ENVIRONMENT": fdef.environment,
                "PATH": f"{fdef.image.python.parent}:/usr/local/bin:/usr/bin:/bin",
                "PYTHONPATH": self.runtime_core,
                "VIRTUAL_ENV": str(fdef.image.python.parent.parent),
            }
        )
        cwd = Path(fdef.source_dir or fdef.image.root)
        if fdef.image.workdir and Path(fdef.image.workdir).is_dir():
            cwd = Path(fdef.image.workdir)
        env.update(self._gpu_env(c))
        spec = ContainerSpec(
            container_id=cid,
            python=fdef.image.python,
            env=env,
            cwd=cwd,
            cpu=_limit_of(fdef.options.get("cpu")),
            memory_mb=_mb_limit(fdef.options.get("memory")),
            gpus=tuple(str(i) for i in c.gpus),
            block_network=bool(fdef.options.get("block_network")),
            isolate_network=(fdef.spec.get("web") or {}).get("type") == "web_server",
            volumes=volumes,
            fork=self._fork_spec(fdef, c.pool.params),
        )

        def sink(stream: str, line: str) -> None:
            c.log_tail.append(line)
            self.logs.emit(fdef.app_id, fdef.tag, cid, stream, line)

        try:
            c.handle = await self.backend.start(spec, sink)
        except Exception as exc:
            err = ExecutionError(f"container failed to start: {exc}")
            self._startup_failed(c, error_payload(err))
            self._forget(c)
            return
        startup = float(fdef.options.get("startup_timeout") or fdef.options.get("timeout") or 300)
        asyncio.get_running_loop().call_later(startup, self._check_started, c, startup)
        reason, code = await c.handle.wait()
        self._container_exited(c, reason, code)

    def _gpu_env(self, c: Container) -> dict[str, str]:
        """CUDA_VISIBLE_DEVICES names the container's own GPUs (none: it sees no GPU)."""
        inv = self.gpu_inventory()
        if not c.gpus and not inv.devices:
            return {}
        visible = ",".join(str(i) for i in c.gpus)
        env = {"CUDA_VISIBLE_DEVICES": visible, "NVIDIA_VISIBLE_DEVICES": visible or "void"}
        if c.gpus:
            names = ", ".join(d.name for d in inv.devices if d.index in c.gpus)
            note = " (a fake inventory from KETCH_FAKE_GPUS: no real GPU)" if inv.fake else ""
            self._event(c, f"GPUs {visible} assigned: {names}{note}")
            if inv.fake:
                env["KETCH_FAKE_GPUS"] = "1"
        return env

    def _fork_spec(self, fdef: FunctionDef, params: bytes | None) -> ForkSpec:
        """What a fork-server template loads for containers of this pool."""
        snapshot = (
            bool(fdef.options.get("enable_memory_snapshot")) and fdef.spec.get("kind") == "cls"
        )
        # Parameters only matter to a template that builds the instance (a snapshot);
        # otherwise one template serves every parameter set.
        given = params if snapshot and params else None
        return ForkSpec(
            group=_fork_group(fdef),
            preload={
                "function": fdef.spec,
                "sys_path": _sys_path(fdef),
                "web_runtime": self.runtime_web,
                "params": base64.b64encode(given).decode() if given else None,
            },
            snapshot=snapshot,
            startup_timeout=float(
                fdef.options.get("startup_timeout") or fdef.options.get("timeout") or 300
            ),
        )

    def _check_started(self, c: Container, limit: float) -> None:
        if c.state == "starting" and c.handle is not None:
            c.startup_error = error_payload(
                ExecutionError(f"container did not start within startup_timeout={limit:g}s")
            )
            c.stop_reason = "startup_timeout"
            c.handle.kill()

    def container_hello(self, cid: str, channel: Channel) -> dict[str, Any] | None:
        c = self.containers.get(cid)
        if c is None or c.state != "starting":
            return None
        c.channel = channel
        fdef = c.pool.function
        return {
            "t": "init",
            "function": fdef.spec,
            "params": c.pool.params,
            "sys_path": _sys_path(fdef),
            "web_runtime": self.runtime_web,
            "web_method": fdef.spec.get("web_method"),
            "web_socket": str(self.sockets_dir / f"{cid}.sock"),
            "web_urls": {
                f.tag: f.spec["web_url"]
                for f in self.functions.values()
                if f.app_id == fdef.app_id and f.spec.get("web_url")
            },
            "app_name": fdef.app_name,
            "app_id": fdef.app_id,
        }

    def container_message(self, cid: str, msg: dict[str, Any]) -> None:
        c = self.containers.get(cid)
        if c is None:
            return
        t = msg["t"]
        if t == "out":
            inp = c.inflight.pop(msg["iid"], None)
            if inp is None:
                return  # an input we already timed out or cancelled
            if not c.inflight:
                c.idle_since = time.monotonic()
            if msg["ok"]:
                self._finish(inp, ok=True, payload=msg["payload"])
            else:
                self._attempt_failed(inp, msg["error"])
            if (
                c.state == "ready"
                and c.free_slots <= 0
                and not c.inflight
                and c.pool.function.options.get("inputs_per_container")
            ):
                self._stop_container(c, "retired after its inputs")
                self._dispatch(c.pool)
            elif c.state == "ready":
                self._dispatch(c.pool)
            elif c.state == "draining" and not c.inflight:
                self._stop_container(c, c.stop_reason or "drained")
        elif t == "item":
            inp = c.inflight.get(msg["iid"])
            if inp is not None:
                self._to_client(inp, {"t": "item", "iid": inp.iid, "payload": msg["payload"]})
        elif t == "ready":
            c.web_addr = msg.get("web_addr")
            c.state = "ready"
            c.ready_at = time.monotonic()
            c.idle_since = time.monotonic()
            self._event(c, "container started")
            if c.pool.retired:
                self._stop_container(c, "retired")
            else:
                self._dispatch(c.pool)
        elif t == "startup_failed":
            c.startup_error = msg["error"]
            c.stop_reason = "startup_failed"
        elif t == "stuck":
            # Sync code that ignores cancellation: the container goes, its other inputs rerun.
            c.stop_reason = "uninterruptible"
            if c.handle is not None:
                c.handle.kill()

    def container_disconnected(self, cid: str) -> None:
        c = self.containers.get(cid)
        if c is not None and c.handle is not None and c.state != "dead":
            c.handle.kill()

    def _container_exited(self, c: Container, reason: str, code: int | None) -> None:
        was = c.state
        c.state = "dead"
        pool = c.pool
        self._forget(c)
        self._event(c, _exit_text(c, was, reason, code))
        if was == "starting" and c.stop_reason == STOPPED_BY_OPERATOR:
            # Not the function's start-up failure (R5): what waits gets a replacement.
            self._dispatch(pool)
            return
        if was == "starting":
            err = c.startup_error or error_payload(
                ExecutionError(
                    f"container exited with code {code} while starting"
                    + (":\n" + "\n".join(c.log_tail) if c.log_tail else "")
                )
            )
            self._startup_failed(c, err)
            return
        if c.inflight:
            deliberate = c.stop_reason in ("uninterruptible", STOPPED_BY_OPERATOR)
            if not deliberate:
                self.counters["crashes"] += 1
                pool.crash_times.append(time.monotonic())
            for inp in list(c.inflight.values()):
                c.inflight.pop(inp.iid)
                self._clear_deadline(inp)
                inp.container = None
                if inp.future is not None:
                    continue  # a web request: the gateway already saw the connection fail
                if not deliberate:
                    inp.crashes += 1
                if inp.crashes > MAX_CRASH_RERUNS:
                    msg = (
                        f"{inp.function.tag}: its container crashed {inp.crashes} times while "
                        f"running this input (last exit: {reason}, code {code}); giving up"
                        + (
                            "; it was killed for using more memory than its memory= limit"
                            if reason == "oom"
                            else ""
                        )
                    )
                    tail = "\n".join(list(c.log_tail)[-10:])
                    self._finish(inp, ok=False, error=error_payload(ExecutionError(msg), tail))
                else:
                    self._enqueue(inp, front=True)
        self._dispatch(pool)

    def _startup_failed(self, c: Container, err: dict[str, Any]) -> None:
        pool = c.pool
        # R5: waiting inputs fail at once with the start-up error; no restart loop.
        waiting = list(pool.queue)
        pool.queue.clear()
        for inp in waiting:
            self._finish(inp, ok=False, error=err)
        pool.backoff_until = time.monotonic() + 10.0

    def _forget(self, c: Container) -> None:
        if c.web_addr is not None and self.on_container_gone is not None:
            self.on_container_gone(c.web_addr)
        c.state = "dead"
        c.pool.containers.pop(c.cid, None)
        self.containers.pop(c.cid, None)
        if c.gpus:
            self._release_gpus(c)
        if c.pool.retired and not c.pool.containers and not c.pool.queue:
            self.pools.pop(c.pool.key, None)

    def _stop_container(self, c: Container, reason: str) -> None:
        if c.state in ("draining", "dead") and c.inflight:
            return
        c.stop_reason = reason
        if c.inflight:
            c.state = "draining"
            return
        c.state = "draining"
        if c.channel is not None:
            c.channel.send({"t": "stop"})
        if c.handle is not None:
            self._spawn_task(c.handle.stop(self.stop_grace))

    # -- outcomes -----------------------------------------------------------------------
    def _clear_deadline(self, inp: Input) -> None:
        inp.deadline = None

    def sweep_deadlines(self) -> None:
        """Time out inputs past their deadline (T1/T3: within 1 s of the limit)."""
        now = time.monotonic()
        late = [
            inp
            for c in self.containers.values()
            for inp in c.inflight.values()
            if inp.deadline is not None and inp.deadline <= now
        ]
        for inp in late:
            self._on_timeout(inp)

    def _on_timeout(self, inp: Input) -> None:
        c = inp.container
        if inp.done or c is None:
            return
        if inp.future is not None:
            # T4: a web handler past the function's timeout. Its request cannot be answered
            # from here, so the container goes: the gateway answers 502, never hangs.
            self._clear_deadline(inp)
            self.counters["timeouts"] += 1
            self._event(
                c,
                f"web request timed out after {inp.function.options.get('timeout')}s;"
                " its container is killed",
            )
            c.stop_reason = "uninterruptible"
            if c.handle is not None:
                c.handle.kill()
            return
        c.inflight.pop(inp.iid, None)
        inp.container = None
        if c.channel is not None:
            c.channel.send({"t": "cancel", "iid": inp.iid, "reason": "timeout"})
        self.counters["timeouts"] += 1
        limit = inp.function.options.get("timeout") or 300
        self._event(c, f"input {inp.iid} timed out after {limit}s")
        err = error_payload(FunctionTimeoutError(f"{inp.function.tag} timed out after {limit}s"))
        self._attempt_failed(inp, err)
        if c.state == "ready":
            self._dispatch(c.pool)

    def _attempt_failed(self, inp: Input, error: dict[str, Any]) -> None:
        self._clear_deadline(inp)
        retries = inp.function.options.get("retries")
        if retries and inp.attempts < int(retries["max_retries"]):
            inp.attempts += 1
            k = inp.attempts
            delay = min(
                float(retries["initial_delay"]) * float(retries["backoff_coefficient"]) ** (k - 1),
                float(retries["max_delay"]),
            )
            self.counters["retries"] += 1
            inp.container = None
            asyncio.get_running_loop().call_later(delay, self._enqueue, inp)
            return
        self._finish(inp, ok=False, error=error)

    def _finish(
        self,
        inp: Input,
        *,
        ok: bool,
        payload: bytes | None = None,
        error: dict[str, Any] | None = None,
        status: str | None = None,
    ) -> None:
        if inp.done:
            return
        if inp.future is not None:
            # A web request that could not get a container: the gateway answers for it.
            inp.done = True
            if self.on_web_done is not None:
                self.on_web_done(inp, "no_container", 502)
            if not inp.future.done():
                # Told in words: the pickled exception may come from a container, and the
                # server never unpickles what a peer sends.
                text = str((error or {}).get("repr") or "no container could be started")
                inp.future.set_exception(ExecutionError(text))
            return
        inp.done = True
        self._clear_deadline(inp)
        self.inputs.pop(inp.iid, None)
        if self.on_input_done is not None:
            self.on_input_done(inp, ok)
        if inp.container is not None:
            inp.container.inflight.pop(inp.iid, None)
        msg = {"t": "res", "iid": inp.iid, "ok": ok, "payload": payload, "error": error}
        if inp.spawned:
            st = status or ("ok" if ok else "error")
            record = pickle.dumps({"ok": ok, "payload": payload, "error": error})
            self.store.finish_call(inp.iid, st, record, inp.attempts + 1, self.result_ttl)
            for fut in self.call_waiters.pop(inp.iid, []):
                if not fut.done():
                    fut.set_result(None)
        if inp.client_id is not None:
            self._to_client(inp, msg)

    def _to_client(self, inp: Input, msg: dict[str, Any]) -> None:
        assert inp.client_id is not None
        ch = self.clients.get(inp.client_id)
        if ch is not None and not ch.closed:
            ch.send(msg)
            return
        # Keep it for the client's return (a .remote() across a reconnect runs once).
        entry = self.undelivered[inp.client_id].setdefault(
            inp.iid, (time.monotonic() + UNDELIVERED_TTL, [])
        )
        entry[1].append(msg)

    def client_connected(self, client_id: str, channel: Channel) -> None:
        self.clients[client_id] = channel

    def client_disconnected(self, client_id: str, channel: Channel) -> None:
        if self.clients.get(client_id) is channel:
            del self.clients[client_id]

    def _flush_undelivered(self, client_id: str, only: str | None = None) -> None:
        ch = self.clients.get(client_id)
        pending = self.undelivered.get(client_id)
        if ch is None or not pending:
            return
        for iid in [only] if only else list(pending):
            entry = pending.pop(iid, None)
            if entry:
                for msg in entry[1]:
                    ch.send(msg)

    # -- web requests -------------------------------------------------------------------
    async def acquire_web(self, function_id: str, params: bytes | None = None) -> tuple[Input, str]:
        """Wait for a container of the function with a free slot (starting one if needed);
        the request holds that slot until `web_done`."""
        fdef = self.functions.get(function_id)
        if fdef is None:
            raise NotFoundError("the endpoint's app is not running")
        pool = self._pool_for(fdef, params)
        full = self._queue_full(pool)
        if full is not None:
            raise full  # the gateway answers 429 (S3)
        inp = Input(new_id("wr"), fdef, pool.key, {"params": params}, "web", None)
        inp.future = asyncio.get_running_loop().create_future()
        if self.tracing is not None:
            self.tracing.web_input(inp)
        self.counters["web_requests"] += 1
        self._enqueue(inp)
        try:
            addr = await inp.future
        except asyncio.CancelledError:
            self.web_done(inp)
            raise
        return inp, addr

    def web_done(self, inp: Input, outcome: str = "cancelled", status: int = 0) -> None:
        if inp.done:
            return
        inp.done = True
        if self.on_web_done is not None:
            self.on_web_done(inp, outcome, status)
        self._clear_deadline(inp)
        pool = self.pools.get(inp.pool_key)
        if pool is not None and inp in pool.queue:
            pool.queue.remove(inp)
        c = inp.container
        if c is None:
            return
        c.inflight.pop(inp.iid, None)
        if not c.inflight:
            c.idle_since = time.monotonic()
        if c.state == "ready":
            self._dispatch(c.pool)
        elif c.state == "draining" and not c.inflight:
            self._stop_container(c, c.stop_reason or "drained")

    # -- spawned calls ------------------------------------------------------------------
    def spawn(self, function_id: str, call_id: str, request: dict[str, Any]) -> None:
        if self.store.get_call(call_id) is not None:
            return  # sent again after a reconnect: the first copy was accepted and stored
        fdef = self.functions.get(function_id)
        if fdef is None:
            raise NotFoundError(f"function {function_id} is not deployed")
        full = self._queue_full(self._pool_for(fdef, request.get("params"), request.get("options")))
        if full is not None:
            raise full
        self.store.insert_call(call_id, function_id, fdef.app_id, self._stored_request(request))
        self.submit(function_id, call_id, request, "call", None, spawned=True)

    def _stored_request(self, request: dict[str, Any]) -> bytes:
        """A spawned call's request as the store keeps it: the values of inline secrets
        (`with_options(secrets=[Secret.from_dict(...)])`) sealed, never in plain text."""
        options = request.get("options") or {}
        secrets = options.get("secrets")
        if secrets:
            sealed = [self._seal(s) if s.get("kind") == "inline" else s for s in secrets]
            request = {**request, "options": {**options, "secrets": sealed}}
        return pickle.dumps(request)

    def _seal(self, secret: dict[str, Any]) -> dict[str, Any]:
        if self.box is None:
            # No key to seal with (a scheduler outside a server): the values are not kept,
            # and a call re-run after a restart goes without them.
            return {"kind": "dropped"}
        data = self.box.encrypt(json.dumps(secret.get("values") or {}).encode())
        return {"kind": "sealed", "data": data}

    def _loaded_request(self, data: bytes) -> dict[str, Any]:
        request: dict[str, Any] = pickle.loads(data)  # the server's own record (spawn)
        options = request.get("options") or {}
        secrets = options.get("secrets")
        if secrets:
            opened = []
            for s in secrets:
                if s.get("kind") == "sealed" and self.box is not None:
                    s = {"kind": "inline", "values": json.loads(self.box.decrypt(s["data"]))}
                if s.get("kind") in ("inline", "named"):
                    opened.append(s)
            request = {**request, "options": {**options, "secrets": opened}}
        return request

    async def wait_call(self, call_id: str, timeout: float | None) -> dict[str, Any] | None:
        row = self.store.get_call(call_id)
        if row is None or row["status"] != "pending" or timeout == 0:
            return row
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.call_waiters[call_id].append(fut)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(fut, timeout)
        return self.store.get_call(call_id)

    def cancel_call(self, call_id: str) -> bool:
        inp = self.inputs.get(call_id)
        if inp is None:
            return False
        pool = self.pools.get(inp.pool_key)
        if pool is not None and inp in pool.queue:
            pool.queue.remove(inp)
        c = inp.container
        if c is not None and c.channel is not None:
            c.inflight.pop(inp.iid, None)
            c.channel.send({"t": "cancel", "iid": inp.iid, "reason": "cancelled"})
        self._finish(
            inp,
            ok=False,
            error=error_payload(InputCancellation("the call was cancelled")),
            status="cancelled",
        )
        return True

    def resume_pending_calls(self) -> int:
        """Re-queue spawned calls that had not finished when the server last stopped."""
        n = 0
        for call_id, fid, _app_id, request in self.store.pending_calls():
            if fid in self.functions:
                self.submit(fid, call_id, self._loaded_request(request), "call", None, spawned=True)
            else:
                err = pickle.dumps(
                    {
                        "ok": False,
                        "payload": None,
                        "error": error_payload(
                            ExecutionError("the function's app is not deployed")
                        ),
                    }
                )
                self.store.finish_call(call_id, "error", err, 0, self.result_ttl)
            n += 1
        return n

    # -- status -------------------------------------------------------------------------
    def status(self, app_id: str | None = None) -> dict[str, dict[str, Any]]:
        """Per function (`app_id/tag` keys without an app filter): containers by state,
        queue depth, inputs running and why queued inputs wait. A plain dict for the API."""
        out: dict[str, dict[str, Any]] = {}

        def entry(fdef: FunctionDef) -> dict[str, Any]:
            key = fdef.tag if app_id is not None else f"{fdef.app_name}/{fdef.tag}"
            if key not in out:
                out[key] = {
                    "app_id": fdef.app_id,
                    "function": fdef.tag,
                    "queued": 0,
                    "running": 0,
                    "containers": {"starting": 0, "idle": 0, "busy": 0, "draining": 0},
                    "pools": 0,
                    "waiting": [],
                    "max_containers": fdef.options.get("max_containers"),
                    "min_containers": int(fdef.options.get("min_containers") or 0),
                    "gpu": fdef.options.get("gpu"),
                }
            return out[key]

        for fdef in self.functions.values():
            if app_id is None or fdef.app_id == app_id:
                entry(fdef)
        now = time.monotonic()
        for pool in self.pools.values():
            fdef = pool.function
            if app_id is not None and fdef.app_id != app_id:
                continue
            e = entry(fdef)
            e["pools"] += 1
            e["queued"] += len(pool.queue)
            e["running"] += pool.running_inputs()
            for c in pool.containers.values():
                state = c.state
                if state == "ready":
                    state = "busy" if c.inflight else "idle"
                if state in e["containers"]:
                    e["containers"][state] += 1
            for reason in _waiting_reasons(pool, now):
                if reason not in e["waiting"]:
                    e["waiting"].append(reason)
        return out

    # -- periodic -----------------------------------------------------------------------
    def tick(self) -> None:
        now = time.monotonic()
        for pool in list(self.pools.values()):
            if pool.retired:
                continue
            try:
                self._tick_pool(pool, now)
            except Exception:
                # One pool's failure (a bug, a spec that slipped past validation) must not
                # stop every other pool from scaling; it is logged once, not every second.
                if pool.key not in self._tick_failed:
                    self._tick_failed.add(pool.key)
                    log.exception(
                        "periodic work for %s failed; other pools go on", pool.function.tag
                    )
                pool.waiting_reason = (
                    "waiting: the scheduler cannot scale this function (see the server log)"
                )
            else:
                self._tick_failed.discard(pool.key)
        for client_id, pending in list(self.undelivered.items()):
            for iid, (expiry, _) in list(pending.items()):
                if expiry < now:
                    del pending[iid]
            if not pending:
                del self.undelivered[client_id]

    def _tick_pool(self, pool: Pool, now: float) -> None:
        """Scale one pool down after its idle window, then towards its desired size."""
        view = _view(pool)
        live = pool.live()
        idle = {c.cid: c.idle_since for c in live if c.state == "ready" and not c.inflight}
        window = float(pool.function.options.get("scaledown_window") or 60)
        for cid in containers_to_retire(idle, len(live), desired_containers(view), now, window):
            self._stop_container(pool.containers[cid], "scaledown")
        self._reconcile(pool)

    async def shutdown(self) -> None:
        for c in list(self.containers.values()):
            if c.handle is not None:
                c.handle.kill()
        for task in list(self._tasks):
            task.cancel()

    # -- operations (`ketch container list | stop`, platform events) ----------------------
    # Read-only views and one operator action, kept apart from the scheduling logic above.
    def _event(self, c: Container, text: str) -> None:
        fdef = c.pool.function
        if fdef.app_id:
            self.logs.event(fdef.app_id, fdef.tag, c.cid, text)

    def container_rows(self, app_id: str | None = None) -> list[dict[str, Any]]:
        """Live containers: id, app, function, state (starting/idle/busy/draining), inputs
        in flight, start time and process id."""
        now_wall, now = time.time(), time.monotonic()
        rows = []
        for c in self.containers.values():
            fdef = c.pool.function
            if app_id is not None and fdef.app_id != app_id:
                continue
            state = c.state
            if state == "ready":
                state = "busy" if c.inflight else "idle"
            rows.append(
                {
                    "container_id": c.cid,
                    "app_id": fdef.app_id,
                    "app": fdef.app_name,
                    "function": fdef.tag,
                    "version": fdef.version,
                    "state": state,
                    "inflight": len(c.inflight),
                    "started": now_wall - (now - c.started),
                    "pid": getattr(c.handle, "pid", None),
                }
            )
        return sorted(rows, key=lambda r: r["started"])

    def stop_container_by_id(self, cid: str) -> dict[str, Any]:
        """Stop one container now. Its function inputs in flight go back to the front of
        the queue as after a crash, without counting against their crash allowance, and
        the pool starts a replacement if it still needs one."""
        c = self.containers.get(cid)
        if c is None:
            raise NotFoundError(f"no running container {cid!r} (see `ketch container list`)")
        requeued = sum(1 for inp in c.inflight.values() if inp.future is None)
        self._event(c, "container stopped by an operator")
        c.stop_reason = STOPPED_BY_OPERATOR
        if c.handle is not None:
            c.handle.kill()
        else:
            self._stop_container(c, STOPPED_BY_OPERATOR)
        return {"stopped": cid, "requeued": requeued}


STOPPED_BY_OPERATOR = "stopped by operator"


def _exit_text(c: Container, was: str, reason: str, code: int | None) -> str:
    """The platform event for a container's end, as `ketch app logs` shows it."""
    if was == "starting":
        return f"container failed to start ({reason}, exit code {code})"
    if c.stop_reason is not None and c.stop_reason != "uninterruptible":
        return f"container stopped ({c.stop_reason})"
    if c.inflight:
        return (
            f"container crashed ({reason}, exit code {code}) with {len(c.inflight)} "
            "input(s) in flight"
        )
    if c.stop_reason == "uninterruptible":
        return f"container killed ({reason})"
    return f"container exited ({reason}, exit code {code})"


def _view(pool: Pool) -> PoolView:
    """What the autoscaling policy sees of a pool."""
    opts = pool.function.options
    return PoolView(
        queued=len(pool.queue),
        running=pool.running_inputs(),
        # min_containers keeps the parameterless pool warm, not one per parameter set.
        min_containers=int(opts.get("min_containers") or 0) if pool.params is None else 0,
        max_containers=opts.get("max_containers"),
        buffer_containers=int(opts.get("buffer_containers") or 0),
        # A batched container takes a whole batch at once.
        max_inputs=pool.function.batch_size or pool.function.max_inputs,
        target_inputs=opts.get("target_inputs"),
    )


# Options that Cls.with_options / with_concurrency / with_batching may override per pool.
OVERRIDABLE = frozenset(
    {
        "cpu",
        "memory",
        "gpu",
        "timeout",
        "startup_timeout",
        "retries",
        "min_containers",
        "max_containers",
        "buffer_containers",
        "scaledown_window",
        "max_inputs",
        "target_inputs",
        "batch_max_size",
        "batch_wait_ms",
    }
)


def with_overrides(fdef: FunctionDef, overrides: dict[str, Any]) -> FunctionDef:
    """The function as a pool with overridden options sees it. Unknown keys are ignored;
    secrets add named secrets (resolved as at deploy) and inline values."""
    options = dict(fdef.options)
    options.update({k: v for k, v in overrides.items() if k in OVERRIDABLE})
    spec = {**fdef.spec, "options": options}
    secrets = overrides.get("secrets") or []
    named = [s for s in secrets if isinstance(s, dict) and s.get("kind") == "named"]
    inline: dict[str, str] = {}
    for s in secrets:
        if isinstance(s, dict) and s.get("kind") == "inline":
            inline.update({str(k): str(v) for k, v in (s.get("values") or {}).items()})
    if named:
        spec["secrets"] = list(fdef.spec.get("secrets") or []) + named
    if inline:
        spec["override_env"] = inline
    return dataclasses.replace(fdef, spec=spec)


def _waiting_reasons(pool: Pool, now: float) -> list[str]:
    """Why the queued inputs of a pool are not running yet, in words for `app status`."""
    if not pool.queue:
        return []
    reasons = []
    if pool.waiting_reason:
        reasons.append(pool.waiting_reason)
    if now < pool.backoff_until:
        reasons.append(
            f"waiting: crash-loop backoff after a failed start "
            f"({pool.backoff_until - now:.0f}s left)"
        )
    live = pool.live()
    cap = pool.function.options.get("max_containers")
    if cap is not None and len(live) >= int(cap) and not any(c.free_slots > 0 for c in live):
        reasons.append(f"waiting: at max_containers ({cap}), all slots busy")
    starting = sum(1 for c in live if c.state == "starting")
    if starting:
        reasons.append(f"waiting: {starting} container(s) starting")
    if pool.retired:
        reasons.append("waiting: an older version, handing its inputs to the new one")
    return reasons


def _limit_of(value: Any) -> float | None:
    """cpu= as a number, or the limit of a (request, limit) pair."""
    if isinstance(value, list | tuple):
        return float(value[1])
    return None if value is None else float(value)


def _mb_limit(value: Any) -> int | None:
    """memory= in MiB, or the limit of a (request, limit) pair."""
    if isinstance(value, list | tuple):
        return int(value[1])
    return None if value is None else int(value)


def _sys_path(fdef: FunctionDef) -> list[str]:
    return [p for p in (fdef.source_dir, fdef.mount_dir, _copied_root(fdef)) if p]


def _fork_group(fdef: FunctionDef) -> str:
    """The containers that one fork-server template may serve: a function at one version."""
    return f"{fdef.function_id}:{fdef.version}"


def _copied_root(fdef: FunctionDef) -> str | None:
    """Files an image copied to /root at build time are importable, as on Modal."""
    root = fdef.image.root / "files" / "root"
    return str(root) if root.is_dir() else None


def _missing(function_id: str) -> FunctionDef:
    from ketch._server.images import BuiltImage

    img = BuiltImage(hash="", python=Path(), env={}, workdir=None, root=Path())
    return FunctionDef(function_id, "", "", "", 0, function_id, {"options": {}}, img, None, None)
