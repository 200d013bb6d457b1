"""The prefetch window: inputs of calls and maps sent to a container ahead of a free slot,
so that it starts its next input as soon as one ends instead of waiting a round trip for it.

Such an input is `prefetched` until the container says it started it (`Started`): until
then no deadline runs for it (its timeout counts from its start), a crash of the container
is not its crash (it goes back to the front of its queue uncharged), and it may be handed
back (`Unqueue`/`Unqueued`) when its container drains or its version is replaced.

The window is sized from the pool's mean run time, to about `budget` seconds of work
queued at each container and at most `limit` inputs: a slow function gets none, so that a
container starting later (scale-up) is not left idle while inputs wait behind others.
Web requests and `@batched` functions are never prefetched.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ketch._server.model import Container, Input, Pool, Work
from ketch._utils.protocol import messages as m

if TYPE_CHECKING:
    from ketch._server.scheduler import Scheduler

# The weight of the newest run time in the pool's moving average.
_SMOOTHING = 0.2


def window(pool: Pool, limit: int, budget: float) -> int:
    """How many inputs may wait at one container of `pool` beyond its free slots."""
    fdef = pool.function
    if limit <= 0 or pool.mean_run <= 0.0 or fdef.batch_size or fdef.spec.web is not None:
        return 0  # nothing measured yet: the first inputs go one per slot and measure it
    return min(limit, int(budget * fdef.max_inputs / pool.mean_run))


def room(c: Container, size: int) -> int:
    """Inputs `c` may be sent now: its free slots and the window beyond them, never past
    its `inputs_per_container`."""
    fdef = c.pool.function
    free = fdef.max_inputs + size - len(c.inflight)
    limit = fdef.inputs_per_container
    if limit:
        free = min(free, limit - c.assigned)
    return free


def fill(s: Scheduler, pool: Pool) -> None:
    """Send queued inputs into the windows of the pool's ready containers, the one with
    the most room first (the free slots were filled before, so idle containers came first)."""
    size = window(pool, s.prefetch, s.prefetch_budget) if pool.queue else 0
    if size <= 0:
        return
    ready = [c for c in pool.containers.values() if c.state == "ready"]
    while pool.queue and ready:
        c = max(ready, key=lambda c: room(c, size))
        if room(c, size) <= 0:
            return
        work = pool.queue[0]
        if not isinstance(work, Input):
            return  # a web request waits for a free slot, in its turn
        pool.queue.popleft()
        s.counters["prefetched"] += 1
        s.assign(work, c, prefetched=True)


def ran(pool: Pool, seconds: float) -> None:
    """An input of `pool` ran this long (from its start to its result)."""
    if pool.mean_run <= 0.0:
        pool.mean_run = max(seconds, 1e-6)
    else:
        pool.mean_run += _SMOOTHING * (max(seconds, 1e-6) - pool.mean_run)


def on_started(s: Scheduler, c: Container, msg: m.Started) -> None:
    inp = c.inflight.get(msg["iid"])
    if not isinstance(inp, Input) or not inp.prefetched:
        return
    inp.prefetched = False
    inp.started = s.clock.monotonic()
    inp.deadline = inp.started + inp.function.options.timeout


def unqueue(c: Container) -> None:
    """Ask `c` for its inputs that have not started back (it drains, or its version went)."""
    iids = [w.iid for w in c.inflight.values() if isinstance(w, Input) and w.prefetched]
    if iids and c.channel is not None:
        msg: m.Unqueue = {"t": m.UNQUEUE, "iids": iids}
        c.channel.send(msg)


def on_unqueued(s: Scheduler, c: Container, msg: m.Unqueued) -> None:
    """Inputs `c` handed back go to the front of their queue (their pool's, or the new
    version's), keeping their order; nothing is charged to them."""
    back: list[Work] = []
    for iid in msg["iids"]:
        work = c.inflight.get(iid)
        if isinstance(work, Input) and work.prefetched:
            del c.inflight[iid]
            c.assigned -= 1  # it never ran here: not one of its inputs_per_container
            work.prefetched = False
            work.container = None
            back.append(work)
    s.lifecycle.requeue_front(back)
    if not c.inflight:
        c.idle_since = s.clock.monotonic()
        if c.state == "draining":
            s.lifecycle.stop(c, c.stop_reason or "drained")
        elif c.state == "ready" and c.pool.retired:
            s.lifecycle.stop(c, "retired")
