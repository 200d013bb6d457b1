"""Routes inputs to containers: per-pool FIFO queues, dispatch to free slots and batches,
scaling towards the autoscaling policy's target, retries, and the outcome of each input.

The parts it is built from: `pools` (which pool an input goes to), `lifecycle` (containers
from start to end, and deadlines), `launch` (what a container starts with), `gpu_alloc`
(who holds which GPU), `delivery` (results to their clients, spawned calls' records),
`status_views` (what status and listings show), `prefetch` (inputs sent to a container
ahead of a free slot). All time comes from an injected `Clock`
and containers from a `Backend`, so that unit tests drive it with fakes of both.
"""

from __future__ import annotations

import asyncio
import logging
import tempfile
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, cast

from ketch._backends.base import Backend
from ketch._server import launch, prefetch, status_views
from ketch._server.clock import Clock, SystemClock
from ketch._server.credentials import CredentialStore
from ketch._server.delivery import Delivery
from ketch._server.errors import error_payload
from ketch._server.gpu_alloc import GpuAllocator
from ketch._server.lifecycle import Lifecycle
from ketch._server.logs import LogHub
from ketch._server.model import Container, FunctionDef, Input, Pool, WebRequest, Work
from ketch._server.pools import pool_key, with_overrides
from ketch._server.spawned import SpawnedCalls
from ketch._server.store import Store
from ketch._server.web_requests import WebRequests
from ketch._utils.protocol import messages as m
from ketch._utils.protocol.spec import ImageSpec, OptionsSpec, StoredFunction
from ketch._utils.wire import Channel
from ketch.exception import (
    ExecutionError,
    InputCancellation,
    NotFoundError,
    ResourceExhaustedError,
)

if TYPE_CHECKING:
    from ketch._backends import gpu as gpus
    from ketch._server.crypto import SecretBox
    from ketch._server.tracing import Tracing

log = logging.getLogger("ketch.scheduler")

ContainerHandler = Callable[["Scheduler", Container, Any], None]


class Scheduler:
    # What containers say, by message kind: `handler(scheduler, container, message)`.
    CONTAINER_HANDLERS: ClassVar[dict[str, ContainerHandler]]

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
        clock: Clock | None = None,
        prefetch: int = 0,
        prefetch_budget: float = 0.02,
    ) -> None:
        self.clock: Clock = clock or SystemClock()
        self._now = self.clock.monotonic
        self.backend = backend
        self.store = store
        self.logs = logs
        self.call_addr = call_addr
        self.token = token
        # Each container's own credential, in place of the token (SPEC I4).
        self.credentials = CredentialStore()
        self.result_ttl = result_ttl
        self.secret_env = secret_env
        self.stop_grace = stop_grace
        self.runtime_core, self.runtime_web = runtime_paths
        self.sockets_dir = sockets_dir or Path(tempfile.mkdtemp(prefix="ketch-sock-"))
        # Inputs that may wait in one pool's queue (S3): past it new ones are refused.
        self.max_queue = max(1, max_queue)
        # The prefetch window (`prefetch.py`): its most inputs, and seconds of work.
        self.prefetch = max(0, prefetch)
        self.prefetch_budget = prefetch_budget
        self.gpus = GpuAllocator()
        self.delivery = Delivery(self.clock)
        self.lifecycle = Lifecycle(self)
        self.web = WebRequests(self)
        self.spawned = SpawnedCalls(self, result_ttl)
        self.functions: dict[str, FunctionDef] = {}
        self.pools: dict[str, Pool] = {}
        self.containers: dict[str, Container] = {}
        self.inputs: dict[str, Input] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self.counters: Counter[str] = Counter()
        # Told the web address of each container that goes, so pooled connections to it close.
        self.on_container_gone: Callable[[str], None] | None = None
        # Told of every finished input and web request (call records, latency histograms).
        self.on_input_done: Callable[[Input, bool], None] | None = None
        self.on_web_done: Callable[[WebRequest, str, int], None] | None = None
        # Spans for inputs and web requests (O5); None, and never looked at further, when off.
        self.tracing: Tracing | None = None

    @property
    def box(self) -> SecretBox | None:
        """Seals the inline secrets of spawned calls' stored requests (set by the server)."""
        return self.spawned.box

    @box.setter
    def box(self, box: SecretBox | None) -> None:
        self.spawned.box = box

    # -- functions ----------------------------------------------------------------------
    def register(self, fdef: FunctionDef, *, prepare: bool = False) -> None:
        """Make `fdef` the live version of its function; older pools drain and go.
        `prepare`: start its fork-server template now, not at its first container."""
        old = self.functions.get(fdef.function_id)
        if old is not None and old.version != fdef.version:
            self.backend.retire(launch.fork_group(old))  # a template started at deploy too
        self.functions[fdef.function_id] = fdef
        for pool in list(self.pools.values()):
            # By version, not identity: a pool with per-handle overrides holds a copy.
            if (
                pool.function.function_id == fdef.function_id
                and pool.function.version != fdef.version
            ):
                self._retire_pool(pool)
        if prepare:  # once the rest of its app is registered too (web_runtime_for)
            asyncio.get_running_loop().call_soon(self.lifecycle.prepare, fdef)
        if fdef.options.min_containers > 0:
            # Warm containers are wanted before any traffic, so the pool must exist now.
            self.lifecycle.reconcile(self.pool_for(fdef, None))

    def unregister_app(self, app_id: str) -> None:
        for fid in [f for f, d in self.functions.items() if d.app_id == app_id]:
            self.backend.retire(launch.fork_group(self.functions.pop(fid)))
        for pool in list(self.pools.values()):
            if pool.function.app_id == app_id:
                err = error_payload(ExecutionError(f"app {pool.function.app_name!r} was stopped"))
                while pool.queue:
                    self.fail(pool.queue.popleft(), err)
                for c in list(pool.containers.values()):
                    for work in list(c.inflight.values()):
                        self.fail(work, err)
                self._retire_pool(pool)

    def _retire_pool(self, pool: Pool) -> None:
        pool.retired = True
        self.backend.retire(launch.fork_group(pool.function))  # its fork-server template goes
        # Inputs still queued for the old version move to the new one.
        newer = self.functions.get(pool.function.function_id)
        while pool.queue and newer is not None and newer is not pool.function:
            work = pool.queue.popleft()
            work.function = newer
            new_pool = self.pool_for(newer, *work.pool_args())
            work.function = new_pool.function
            work.pool_key = new_pool.key
            self.enqueue(work)
        for c in list(pool.containers.values()):
            if not c.inflight:
                self.lifecycle.stop(c, "retired")
            else:
                prefetch.unqueue(c)  # what has not started there runs on the new version
        if not pool.containers and not pool.queue:
            self.pools.pop(pool.key, None)  # nothing left of it (else `forget` removes it)

    def pool_for(
        self, fdef: FunctionDef, params: bytes | None, overrides: dict[str, Any] | None = None
    ) -> Pool:
        key = pool_key(fdef, params, overrides)
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
        if client_id is not None and self.delivery.holds(client_id, iid):
            self.delivery.flush(client_id, only=iid)
            return
        fdef = self.functions.get(function_id)
        if fdef is None:
            inp = Input(
                iid,
                _missing(function_id),
                "",
                request,
                kind,
                client_id,
                spawned,
                created=self._now(),
            )
            err = error_payload(NotFoundError(f"function {function_id} is not deployed"))
            self.finish(inp, ok=False, error=err)
            return
        pool = self.pool_for(fdef, request.get("params"), request.get("options"))
        inp = Input(
            iid, pool.function, pool.key, request, kind, client_id, spawned, created=self._now()
        )
        if self.tracing is not None:
            self.tracing.input_started(inp)
        # A spawned call was checked against the bound when `spawn` accepted it; one that
        # a restart re-queues was accepted then and must not be refused now.
        full = None if spawned else self.queue_full(pool)
        if full is not None:
            self.finish(inp, ok=False, error=error_payload(full))
            return
        self.inputs[iid] = inp
        self.counters["inputs"] += 1
        self.enqueue(inp)

    def enqueue(self, work: Work, *, front: bool = False) -> None:
        pool = self.queue_of(work)
        if pool is None:
            return
        if front:
            pool.queue.appendleft(work)
        else:
            work.queued_at = self._now()
            pool.queue.append(work)
        self.dispatch(pool)

    def queue_of(self, work: Work) -> Pool | None:
        """The pool `work` waits in (its live version's); None once it cannot run."""
        if work.done:
            return None
        pool = self.pools.get(work.pool_key)
        if pool is None or pool.retired:
            fdef = self.functions.get(work.function.function_id)
            if fdef is None:
                self.fail(work, error_payload(ExecutionError("the function's app is stopped")))
                return None
            pool = self.pool_for(fdef, *work.pool_args())
            work.function = pool.function
            work.pool_key = pool.key
        return pool

    def queue_full(self, pool: Pool) -> ResourceExhaustedError | None:
        """The refusal for a new input when its pool's queue is at the bound (S3)."""
        if len(pool.queue) < self.max_queue:
            return None
        self.counters["queue_full"] += 1
        return ResourceExhaustedError(
            f"{pool.function.tag}: too many inputs waiting ({len(pool.queue)} queued, the "
            f"limit is {self.max_queue}); retry later, or raise max_containers / "
            "@concurrent(max_inputs=) or the server's max_queue (KETCH_MAX_QUEUE)"
        )

    def dispatch(self, pool: Pool) -> None:
        while pool.queue and not pool.function.batch_size:
            ready = [c for c in pool.containers.values() if c.state == "ready" and c.free_slots > 0]
            if not ready:
                break
            c = max(ready, key=lambda c: c.free_slots)
            while pool.queue and c.free_slots > 0:
                self.assign(pool.queue.popleft(), c)
        prefetch.fill(self, pool)
        if pool.function.batch_size:
            self._dispatch_batches(pool)
        # Scaling decisions are batched per loop turn: a burst of submits costs one.
        if not pool.reconcile_scheduled:
            pool.reconcile_scheduled = True
            asyncio.get_running_loop().call_soon(self._reconcile_later, pool)

    def _reconcile_later(self, pool: Pool) -> None:
        pool.reconcile_scheduled = False
        self.lifecycle.reconcile(pool)

    def _dispatch_batches(self, pool: Pool) -> None:
        """@batched (S5): up to max_batch_size queued inputs go to an idle container as one
        batch; a short batch waits until the oldest input has waited wait_ms."""
        size = pool.function.batch_size
        wait = (pool.function.options.batch_wait_ms or 0) / 1000
        while pool.queue:
            idle = [c for c in pool.containers.values() if c.state == "ready" and not c.inflight]
            if not idle:
                return
            if len(pool.queue) < size:
                due = pool.queue[0].queued_at + wait - self._now()
                if due > 0:
                    if pool.batch_timer is None:
                        pool.batch_timer = self.clock.call_later(due, self._batch_due, pool)
                    return
            c = idle[0]
            batch = [pool.queue.popleft() for _ in range(min(size, len(pool.queue)))]
            for work in batch:
                self.assign(work, c, send=False)
            assert c.channel is not None
            inputs = [
                {"iid": w.iid, "args": w.request.get("args"), "method": w.request.get("method")}
                for w in batch
                if isinstance(w, Input)  # a web function is never @batched
            ]
            c.channel.send({"t": m.BATCH, "kind": "call", "inputs": inputs})

    def _batch_due(self, pool: Pool) -> None:
        pool.batch_timer = None
        self.dispatch(pool)

    def assign(
        self, work: Work, c: Container, *, send: bool = True, prefetched: bool = False
    ) -> None:
        """Hand `work` to `c`: into a free slot, or into its prefetch window (prefetch.py)."""
        assert c.channel is not None
        work.container = c
        c.inflight[work.iid] = work
        c.assigned += 1
        if prefetched:
            assert isinstance(work, Input)
            work.prefetched, work.started, work.deadline = True, None, None
        else:
            work.started = self._now()
            # A deadline, not a timer per input: one sweep a quarter second checks them all.
            work.deadline = work.started + work.function.options.timeout
        if self.tracing is not None:
            self.tracing.assigned(work, c)  # before the send: the input carries its context
        if isinstance(work, Input):
            if send:
                msg = {"t": m.INPUT, "iid": work.iid, "kind": work.kind, **work.request}
                if work.spawned:
                    msg["call_id"] = work.iid  # a spawned call's input id is its call id
                if prefetched:
                    msg["prefetched"] = True
                c.channel.send(msg)
        elif isinstance(work, WebRequest) and not work.future.done():
            work.future.set_result(c.web_addr or "")

    @property
    def gpu_owner(self) -> dict[int, str]:
        return self.gpus.owner

    def gpu_inventory(self) -> gpus.Inventory:
        return self.gpus.inventory()

    # -- containers ---------------------------------------------------------------------
    def spawn_task(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def container_hello(self, cid: str, channel: Channel) -> dict[str, Any] | None:
        return self.lifecycle.hello(cid, channel)

    def container_disconnected(self, cid: str) -> None:
        self.lifecycle.disconnected(cid)

    def container_message(self, cid: str, msg: dict[str, Any]) -> None:
        c = self.containers.get(cid)
        if c is None:
            return
        handler = self.CONTAINER_HANDLERS.get(msg["t"])
        if handler is not None:
            handler(self, c, msg)

    def _on_out(self, c: Container, msg: m.Out) -> None:
        inp = c.inflight.get(msg["iid"])
        if not isinstance(inp, Input):
            return  # an input we already timed out or cancelled (or not one of its inputs)
        del c.inflight[inp.iid]
        now = self._now()
        if not c.inflight:
            c.idle_since = now
        if inp.started is not None:
            prefetch.ran(c.pool, now - inp.started)
        if msg["ok"]:
            self.finish(inp, ok=True, payload=msg.get("payload"))
        else:
            self.attempt_failed(inp, cast("dict[str, Any] | None", msg.get("error")))
        if (
            c.state == "ready"
            and c.free_slots <= 0
            and not c.inflight
            and c.pool.function.options.inputs_per_container
        ):
            self.lifecycle.stop(c, "retired after its inputs")
            self.dispatch(c.pool)
        elif c.state == "ready" and c.pool.retired and not c.inflight:
            self.lifecycle.stop(c, "retired")  # an old version's container, done with its last
        elif c.state == "ready":
            self.dispatch(c.pool)
        elif c.state == "draining" and not c.inflight:
            self.lifecycle.stop(c, c.stop_reason or "drained")

    def _on_item(self, c: Container, msg: m.Item) -> None:
        inp = c.inflight.get(msg["iid"])
        if isinstance(inp, Input):
            self._to_client(inp, {"t": m.ITEM, "iid": inp.iid, "payload": msg["payload"]})

    def _on_ready(self, c: Container, msg: m.Ready) -> None:
        c.web_addr = msg.get("web_addr")
        c.state = "ready"
        c.ready_at = self._now()
        c.idle_since = self._now()
        self.event(c, "container started")
        if c.pool.retired:
            self.lifecycle.stop(c, "retired")
        else:
            self.dispatch(c.pool)

    def _on_startup_failed(self, c: Container, msg: m.StartupFailed) -> None:
        c.startup_error = cast("dict[str, Any]", msg["error"])
        c.stop_reason = "startup_failed"

    def _on_stuck(self, c: Container, msg: m.Stuck) -> None:
        # Sync code that ignores cancellation: the container goes, its other inputs rerun.
        self.lifecycle.kill(c, "uninterruptible")

    CONTAINER_HANDLERS = {
        m.OUT: _on_out,
        m.ITEM: _on_item,
        m.READY: _on_ready,
        m.STARTUP_FAILED: _on_startup_failed,
        m.STUCK: _on_stuck,
        m.STARTED: prefetch.on_started,
        m.UNQUEUED: prefetch.on_unqueued,
    }

    # -- outcomes -----------------------------------------------------------------------
    def sweep_deadlines(self) -> None:
        """Time out inputs past their deadline (T1/T3: within 1 s of the limit)."""
        self.lifecycle.sweep_deadlines()

    def attempt_failed(self, inp: Input, error: dict[str, Any] | None) -> None:
        inp.deadline = None
        retries = inp.function.options.retries
        if retries is not None and inp.attempts < retries.max_retries:
            inp.attempts += 1
            delay = retries.delay_for(inp.attempts)
            self.counters["retries"] += 1
            inp.container = None
            self.clock.call_later(delay, self.enqueue, inp)
            return
        self.finish(inp, ok=False, error=error)

    def fail(self, work: Work, error: dict[str, Any]) -> None:
        """`work` cannot run (its app stopped, its container could not start)."""
        if isinstance(work, Input):
            self.finish(work, ok=False, error=error)
            return
        assert isinstance(work, WebRequest)
        self.web.failed(work, error)

    def finish(
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
        inp.done = True
        inp.deadline = None
        self.inputs.pop(inp.iid, None)
        if self.on_input_done is not None:
            self.on_input_done(inp, ok)
        if inp.container is not None:
            inp.container.inflight.pop(inp.iid, None)
        if inp.spawned:
            self.spawned.record(inp, ok, payload, error, status)
        if inp.client_id is not None:
            res = {"t": m.RES, "iid": inp.iid, "ok": ok, "payload": payload, "error": error}
            self.delivery.send(inp.client_id, inp.iid, res)

    def _to_client(self, inp: Input, msg: dict[str, Any]) -> None:
        assert inp.client_id is not None
        self.delivery.send(inp.client_id, inp.iid, msg)

    # -- clients ------------------------------------------------------------------------
    def client_connected(self, client_id: str, channel: Channel) -> None:
        self.delivery.connected(client_id, channel)

    def client_disconnected(self, client_id: str, channel: Channel) -> None:
        self.delivery.disconnected(client_id, channel)

    def _flush_undelivered(self, client_id: str, only: str | None = None) -> None:
        self.delivery.flush(client_id, only)

    # -- web requests and spawned calls ------------------------------------------------
    async def acquire_web(
        self, function_id: str, params: bytes | None = None
    ) -> tuple[WebRequest, str]:
        """Wait for a container of the function with a free slot (starting one if needed);
        the request holds that slot until `web_done`."""
        return await self.web.acquire(function_id, params)

    def web_done(self, req: WebRequest, outcome: str = "cancelled", status: int = 0) -> None:
        self.web.done(req, outcome, status)

    def spawn(self, function_id: str, call_id: str, request: dict[str, Any]) -> None:
        self.spawned.spawn(function_id, call_id, request)

    async def wait_call(self, call_id: str, timeout: float | None) -> dict[str, Any] | None:
        return await self.spawned.wait(call_id, timeout)

    def resume_pending_calls(self) -> int:
        """Re-queue spawned calls that had not finished when the server last stopped."""
        return self.spawned.resume()

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
            cancel: m.CancelInput = {"t": m.CANCEL, "iid": inp.iid, "reason": "cancelled"}
            c.channel.send(cancel)
        err = error_payload(InputCancellation("the call was cancelled"))
        self.finish(inp, ok=False, error=err, status="cancelled")
        return True

    # -- periodic -----------------------------------------------------------------------
    def tick(self) -> None:
        now = self._now()
        self.lifecycle.scale(now)
        self.delivery.expire(now)

    async def shutdown(self) -> None:
        for c in list(self.containers.values()):
            if c.handle is not None:
                c.handle.kill()
        for task in list(self._tasks):
            task.cancel()

    # -- views and operations (`ketch app status`, `ketch container list | stop`) -------
    def status(self, app_id: str | None = None) -> dict[str, dict[str, Any]]:
        """Per function (`app_id/tag` keys without an app filter): containers by state,
        queue depth, inputs running and why queued inputs wait. A plain dict for the API."""
        return status_views.status(
            self.functions.values(), self.pools.values(), app_id, self._now()
        )

    def container_rows(self, app_id: str | None = None) -> list[dict[str, Any]]:
        """Live containers: id, app, function, state (starting/idle/busy/draining), inputs
        in flight, start time and process id."""
        return status_views.container_rows(
            self.containers.values(), app_id, self.clock.time(), self._now()
        )

    def event(self, c: Container, text: str) -> None:
        fdef = c.pool.function
        if fdef.app_id:
            self.logs.event(fdef.app_id, fdef.tag, c.cid, text)

    def stop_container_by_id(self, cid: str) -> dict[str, Any]:
        """Stop one container now. Its function inputs in flight go back to the front of
        the queue as after a crash, without counting against their crash allowance, and
        the pool starts a replacement if it still needs one."""
        return self.lifecycle.stop_by_operator(cid)


def _missing(function_id: str) -> FunctionDef:
    from ketch._server.images import BuiltImage

    img = BuiltImage(hash="", python=Path(), env={}, workdir=None, root=Path())
    return FunctionDef(function_id, "", "", "", 0, function_id, _MISSING, img, None, None)


# The spec of a function that is not deployed: an input for it fails before anything reads it.
_MISSING = StoredFunction.model_construct(
    tag="-", options=OptionsSpec(), image=ImageSpec(python_version="3.12")
)
