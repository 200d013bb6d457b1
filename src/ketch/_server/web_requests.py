"""Requests through the gateway, as the scheduler sees them: each waits in its function's
queue for a slot of a container, and holds it until the gateway says it is done. The
request itself never passes through the scheduler; being assigned a container hands the
gateway that container's address."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from ketch._server.model import WebRequest
from ketch._utils.ids import new_id
from ketch.exception import ExecutionError, NotFoundError

if TYPE_CHECKING:
    from ketch._server.scheduler import Scheduler


class WebRequests:
    def __init__(self, scheduler: Scheduler) -> None:
        self.s = scheduler

    async def acquire(self, function_id: str, params: bytes | None) -> tuple[WebRequest, str]:
        s = self.s
        fdef = s.functions.get(function_id)
        if fdef is None:
            raise NotFoundError("the endpoint's app is not running")
        pool = s.pool_for(fdef, params)
        full = s.queue_full(pool)
        if full is not None:
            raise full  # the gateway answers 429 (S3)
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        req = WebRequest(
            new_id("wr"), fdef, pool.key, params=params, future=future, created=s.clock.monotonic()
        )
        if s.tracing is not None:
            s.tracing.web_input(req)
        s.counters["web_requests"] += 1
        s.enqueue(req)
        try:
            addr = await future
        except asyncio.CancelledError:
            self.done(req)
            raise
        return req, addr

    def done(self, req: WebRequest, outcome: str = "cancelled", status: int = 0) -> None:
        s = self.s
        if req.done:
            return
        req.done = True
        if s.on_web_done is not None:
            s.on_web_done(req, outcome, status)
        req.deadline = None
        pool = s.pools.get(req.pool_key)
        if pool is not None and req in pool.queue:
            pool.queue.remove(req)
        c = req.container
        if c is None:
            return
        c.inflight.pop(req.iid, None)
        if not c.inflight:
            c.idle_since = s.clock.monotonic()
        if c.state == "ready" and c.pool.retired and not c.inflight:
            s.lifecycle.stop(c, "retired")  # an old version's container, done with its last
        elif c.state == "ready":
            s.dispatch(c.pool)
        elif c.state == "draining" and not c.inflight:
            s.lifecycle.stop(c, c.stop_reason or "drained")

    def failed(self, req: WebRequest, error: dict[str, Any]) -> None:
        """No container could take the request (its app stopped, its container did not
        start): the gateway answers for it."""
        if req.done:
            return
        req.done = True
        if self.s.on_web_done is not None:
            self.s.on_web_done(req, "no_container", 502)
        if not req.future.done():
            # Told in words: the pickled exception may come from a container, and the
            # server never unpickles what a peer sends.
            text = str(error.get("repr") or "no container could be started")
            req.future.set_exception(ExecutionError(text))
