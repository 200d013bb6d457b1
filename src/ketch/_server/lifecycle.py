"""Containers: how many each pool runs (reconciled towards the autoscaling policy's target,
scaled down after the idle window), and each one's life: its start with its launch and
start-up time limit, exits and crashes (the inputs it held run again, up to a limit),
start-up failures (what waits fails at once, then a backoff), stopping and draining, the
operator's stop, and the input deadlines whose passing cancels an input or kills it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ketch._server import launch, prefetch, status_views
from ketch._server.autoscaling import containers_to_retire, desired_containers
from ketch._server.errors import error_payload
from ketch._server.model import Container, FunctionDef, Input, Pool, WebRequest, Work
from ketch._server.pools import pool_view
from ketch._utils.ids import new_id
from ketch._utils.protocol import messages as m
from ketch.exception import ExecutionError, FunctionTimeoutError, NotFoundError

if TYPE_CHECKING:
    from ketch._backends.base import ContainerSpec
    from ketch._server.scheduler import Scheduler
    from ketch._utils.wire import Channel

log = logging.getLogger("ketch.scheduler")

# A run lost to container deaths is repeated this many times before the input fails.
MAX_CRASH_RERUNS = 3
# After a failed start, no automatic restarts of the pool for this long (R5).
STARTUP_BACKOFF = 10.0
STOPPED_BY_OPERATOR = "stopped by operator"
# Stops that are ketch's doing: the inputs they cut short are not charged a crash.
_DELIBERATE = ("uninterruptible", STOPPED_BY_OPERATOR)


class Lifecycle:
    """The container half of the scheduler; the queue half is `Scheduler` itself, which
    holds the state both work on (and one logger: `ketch.scheduler`)."""

    def __init__(self, scheduler: Scheduler) -> None:
        self.s = scheduler
        self._scale_failed: set[str] = set()  # pools whose periodic work failed (logged once)

    # -- how many ---------------------------------------------------------------------------
    def reconcile(self, pool: Pool) -> None:
        s = self.s
        if pool.retired:
            return
        want = desired_containers(pool_view(pool))
        live = pool.live()
        gpu = pool.function.options.gpu
        pool.waiting_reason = None
        if pool.queue and not live:
            want = max(want, 1)
        if s.clock.monotonic() < pool.backoff_until and not pool.queue:
            return
        for _ in range(want - len(live)):
            cid = new_id("ta")
            held: tuple[int, ...] = ()
            if gpu:
                # S7: a GPU function never runs without its GPUs; its inputs wait, saying why.
                taken = s.gpus.take(gpu, cid)
                if taken is None:
                    pool.waiting_reason = s.gpus.why_waiting(gpu)
                    break
                held = taken
            # Registered now, not in the task: the next reconcile must already count it.
            now = s.clock.monotonic()
            c = Container(cid=cid, pool=pool, gpus=held, started=now, idle_since=now)
            pool.containers[c.cid] = c
            s.containers[c.cid] = c
            s.spawn_task(self.start(c))

    def scale(self, now: float) -> None:
        """The periodic pass: every pool scaled down after its idle window, then towards
        its desired size."""
        for pool in list(self.s.pools.values()):
            if pool.retired:
                continue
            try:
                self._scale_pool(pool, now)
            except Exception:
                # One pool's failure (a bug, a spec that slipped past validation) must not
                # stop every other pool from scaling; it is logged once, not every second.
                if pool.key not in self._scale_failed:
                    self._scale_failed.add(pool.key)
                    log.exception(
                        "periodic work for %s failed; other pools go on", pool.function.tag
                    )
                pool.waiting_reason = (
                    "waiting: the scheduler cannot scale this function (see the server log)"
                )
            else:
                self._scale_failed.discard(pool.key)

    def _scale_pool(self, pool: Pool, now: float) -> None:
        view = pool_view(pool)
        live = pool.live()
        idle = {c.cid: c.idle_since for c in live if c.state == "ready" and not c.inflight}
        window = float(pool.function.options.scaledown_window)
        for cid in containers_to_retire(idle, len(live), desired_containers(view), now, window):
            self.stop(pool.containers[cid], "scaledown")
        self.reconcile(pool)

    # -- start ----------------------------------------------------------------------------
    async def start(self, c: Container) -> None:
        s, fdef, cid = self.s, c.pool.function, c.cid
        s.counters["cold_starts"] += 1
        # Its own credential, never the server token: user code runs in there (SPEC I4).
        credential = s.credentials.issue(cid, fdef.app_id, fdef.environment)
        try:
            spec, note = self.container_spec(fdef, cid, credential, c.gpus, c.pool.params)
        except Exception as exc:
            self.startup_failed(c, error_payload(exc))
            self.forget(c)
            return
        if note is not None:
            s.event(c, note)

        def sink(stream: str, line: str) -> None:
            if stream == "event":
                # A platform note about the container (how it started): stored and followed
                # in `app logs`, never mixed into a `ketch run`'s output.
                s.logs.event(fdef.app_id, fdef.tag, cid, line)
                return
            c.log_tail.append(line)
            s.logs.emit(fdef.app_id, fdef.tag, cid, stream, line)

        try:
            c.handle = await s.backend.start(spec, sink)
        except Exception as exc:
            err = ExecutionError(f"container failed to start: {exc}")
            self.startup_failed(c, error_payload(err))
            self.forget(c)
            return
        startup = float(fdef.options.effective_startup_timeout)
        s.clock.call_later(startup, self._check_started, c, startup)
        reason, code = await c.handle.wait()
        self.exited(c, reason, code)

    def container_spec(
        self,
        fdef: FunctionDef,
        cid: str,
        token: str,
        gpus: tuple[int, ...] = (),
        params: bytes | None = None,
    ) -> tuple[ContainerSpec, str | None]:
        """What a container of `fdef` starts as, and a note on its GPUs for its log; raises
        what resolving its secrets or volumes raises."""
        s = self.s
        env = launch.user_env(fdef, s.secret_env(fdef))
        from ketch._server.volumes import container_mounts

        volumes = container_mounts(fdef.volumes, fdef.spec.volumes)
        env.update(
            launch.runtime_env(
                fdef, cid, call_addr=s.call_addr, token=token, runtime_core=s.runtime_core
            )
        )
        gpu_env, note = s.gpus.env(gpus)
        env.update(gpu_env)
        web_dir = launch.web_socket_dir(s.sockets_dir, fdef)
        # Unmade (a sockets directory gone), the container fails to start, saying where.
        with contextlib.suppress(OSError):
            web_dir.mkdir(mode=0o700, exist_ok=True)
        if fdef.image.rootfs is not None:
            with contextlib.suppress(OSError):
                (fdef.image.rootfs.root / launch.MOUNT_POINT).mkdir(exist_ok=True)
        sockets = [Path(s.call_addr[5:])] if s.call_addr.startswith("unix:") else []
        sockets.append(s.sockets_dir / "api.sock")
        sandbox = launch.sandbox_spec(
            fdef,
            # The state directory (the store's) and the sockets: nothing of them shows.
            hide=tuple(p for p in (s.store and s.store.path.parent, s.sockets_dir) if p),
            sockets=sockets,
            runtime_paths=(s.runtime_core, s.runtime_web),
            web_dir=web_dir,
            volumes=volumes,
            gpus=gpus,
        )
        spec = launch.container_spec(
            fdef,
            cid,
            env=env,
            gpus=gpus,
            volumes=volumes,
            params=params,
            runtime_web=launch.web_runtime_for(fdef, s.functions.values(), s.runtime_web),
            sandbox=sandbox,
            at_root=launch.source_at_root(fdef, s.backend.sandboxed),
        )
        return spec, note

    def prepare(self, fdef: FunctionDef) -> None:
        """Just deployed: the backend may get ready to start `fdef`'s containers quickly
        (its fork-server template loads the function now, not at the first request)."""
        snapshot = fdef.options.enable_memory_snapshot and fdef.spec.kind == "cls"
        if self.s.functions.get(fdef.function_id) is not fdef or fdef.options.gpu or snapshot:
            return  # never forked; a snapshot's template may need parameters unknown yet
        try:
            spec, _ = self.container_spec(fdef, new_id("ta"), token="")
            self.s.backend.prepare(spec)
        except Exception:
            log.debug("no template at deploy for %s", fdef.tag, exc_info=True)

    def _check_started(self, c: Container, limit: float) -> None:
        if c.state == "starting" and c.handle is not None:
            c.startup_error = error_payload(
                ExecutionError(f"container did not start within startup_timeout={limit:g}s")
            )
            c.stop_reason = "startup_timeout"
            c.handle.kill()

    def hello(self, cid: str, channel: Channel) -> dict[str, Any] | None:
        """The init message for a container that connects, or None if it is not expected."""
        s = self.s
        c = s.containers.get(cid)
        if c is None or c.state != "starting":
            return None
        c.channel = channel
        fdef = c.pool.function
        return launch.init_message(
            fdef,
            c.pool.params,
            runtime_web=launch.web_runtime_for(fdef, s.functions.values(), s.runtime_web),
            web_socket=str(launch.web_socket_dir(s.sockets_dir, fdef) / f"{cid}.sock"),
            web_urls=launch.app_web_urls(fdef, s.functions.values()),
            at_root=launch.source_at_root(fdef, s.backend.sandboxed),
        )

    # -- the end ----------------------------------------------------------------------------
    def exited(self, c: Container, reason: str, code: int | None) -> None:
        s = self.s
        was = c.state
        c.state = "dead"
        pool = c.pool
        self.forget(c)
        s.event(c, status_views.exit_text(c, was, reason, code))
        if was == "starting" and c.stop_reason == STOPPED_BY_OPERATOR:
            # Not the function's start-up failure (R5): what waits gets a replacement.
            s.dispatch(pool)
            return
        if was == "starting":
            err = c.startup_error or error_payload(
                ExecutionError(
                    f"container exited with code {code} while starting"
                    + (":\n" + "\n".join(c.log_tail) if c.log_tail else "")
                )
            )
            self.startup_failed(c, err)
            return
        if c.inflight:
            deliberate = c.stop_reason in _DELIBERATE
            if not deliberate:
                s.counters["crashes"] += 1
                pool.crash_times.append(s.clock.monotonic())
            # They go back to the front together, in the order they were sent in.
            again: list[Work] = []
            for work in list(c.inflight.values()):
                c.inflight.pop(work.iid)
                work.deadline = None
                work.container = None
                if isinstance(work, Input):
                    # A web request is left alone: the gateway saw its connection fail.
                    # One still waiting in the container's prefetch window never ran.
                    never_ran, work.prefetched = work.prefetched, False
                    if self._rerun(work, c, deliberate or never_ran, reason, code):
                        again.append(work)
            self.requeue_front(again)
        s.dispatch(pool)

    def _rerun(
        self, inp: Input, c: Container, deliberate: bool, reason: str, code: int | None
    ) -> bool:
        """Whether an input whose container died under it runs again (up to a limit); it
        fails when it may not."""
        if not deliberate:
            inp.crashes += 1
        if inp.crashes <= MAX_CRASH_RERUNS:
            return True
        oom = "; it was killed for using more memory than its memory= limit"
        msg = (
            f"{inp.function.tag}: its container crashed {inp.crashes} times while "
            f"running this input (last exit: {reason}, code {code}); giving up"
            + (oom if reason == "oom" else "")
        )
        tail = "\n".join(list(c.log_tail)[-10:])
        self.s.finish(inp, ok=False, error=error_payload(ExecutionError(msg), tail))
        return False

    def requeue_front(self, works: list[Work]) -> None:
        """Put `works` back at the front of their queues, in their order, then dispatch."""
        pools: dict[str, Pool] = {}
        for work in reversed(works):
            pool = self.s.queue_of(work)
            if pool is not None:
                pool.queue.appendleft(work)
                pools[pool.key] = pool
        for pool in pools.values():
            self.s.dispatch(pool)

    def startup_failed(self, c: Container, err: dict[str, Any]) -> None:
        pool = c.pool
        # R5: waiting inputs fail at once with the start-up error; no restart loop.
        waiting = list(pool.queue)
        pool.queue.clear()
        for work in waiting:
            self.s.fail(work, err)
        pool.backoff_until = self.s.clock.monotonic() + STARTUP_BACKOFF

    def forget(self, c: Container) -> None:
        s = self.s
        if c.web_addr is not None and s.on_container_gone is not None:
            s.on_container_gone(c.web_addr)
        c.state = "dead"
        s.credentials.revoke(c.cid)
        c.pool.containers.pop(c.cid, None)
        s.containers.pop(c.cid, None)
        if c.gpus:
            self._release_gpus(c)
        if c.pool.retired and not c.pool.containers and not c.pool.queue:
            s.pools.pop(c.pool.key, None)

    def _release_gpus(self, c: Container) -> None:
        self.s.gpus.release(c.cid, c.gpus)
        self.gpus_freed()

    def gpus_freed(self) -> None:
        """Pools waiting for a GPU may start a container now (a container or an image
        build step gave some back)."""
        s = self.s
        for pool in list(s.pools.values()):
            if pool.queue and pool.function.options.gpu and not pool.retired:
                asyncio.get_running_loop().call_soon(self.reconcile, pool)

    def stop(self, c: Container, reason: str) -> None:
        """Stop `c` once what it runs is done (it drains first)."""
        if c.state in ("draining", "dead") and c.inflight:
            return
        c.stop_reason = reason
        c.state = "draining"
        if c.inflight:
            prefetch.unqueue(c)  # what has not started there goes to other containers
            return
        if c.channel is not None:
            stop: m.Stop = {"t": m.STOP}
            c.channel.send(stop)
        if c.handle is not None:
            self.s.spawn_task(c.handle.stop(self.s.stop_grace))

    def kill(self, c: Container, reason: str) -> None:
        """Kill `c` now; its exit is handled as any other."""
        c.stop_reason = reason
        if c.handle is not None:
            c.handle.kill()

    def disconnected(self, cid: str) -> None:
        c = self.s.containers.get(cid)
        if c is not None and c.handle is not None and c.state != "dead":
            c.handle.kill()

    def stop_by_operator(self, cid: str) -> dict[str, Any]:
        c = self.s.containers.get(cid)
        if c is None:
            raise NotFoundError(f"no running container {cid!r} (see `ketch container list`)")
        requeued = sum(1 for work in c.inflight.values() if isinstance(work, Input))
        self.s.event(c, "container stopped by an operator")
        c.stop_reason = STOPPED_BY_OPERATOR
        if c.handle is not None:
            c.handle.kill()
        else:
            self.stop(c, STOPPED_BY_OPERATOR)
        return {"stopped": cid, "requeued": requeued}

    # -- deadlines --------------------------------------------------------------------------
    def sweep_deadlines(self) -> None:
        now = self.s.clock.monotonic()
        late = [
            work
            for c in self.s.containers.values()
            for work in c.inflight.values()
            if work.deadline is not None and work.deadline <= now
        ]
        for work in late:
            self._timed_out(work)

    def _timed_out(self, work: Work) -> None:
        s, c = self.s, work.container
        if work.done or c is None:
            return
        s.counters["timeouts"] += 1
        limit = work.function.options.timeout
        if isinstance(work, WebRequest):
            # T4: a web handler past the function's timeout. Its request cannot be answered
            # from here, so the container goes: the gateway answers 502, never hangs.
            work.deadline = None
            s.event(c, f"web request timed out after {limit}s; its container is killed")
            self.kill(c, "uninterruptible")
            return
        assert isinstance(work, Input)
        c.inflight.pop(work.iid, None)
        work.container = None
        if c.channel is not None:
            cancel: m.CancelInput = {"t": m.CANCEL, "iid": work.iid, "reason": "timeout"}
            c.channel.send(cancel)
        s.event(c, f"input {work.iid} timed out after {limit}s")
        err = error_payload(FunctionTimeoutError(f"{work.function.tag} timed out after {limit}s"))
        s.attempt_failed(work, err)
        if c.state == "ready":
            s.dispatch(c.pool)
