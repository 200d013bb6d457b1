"""Gateway requests as the scheduler holds them (W7, S2): a request holds a slot of a
container until the gateway says it is done; a redeploy or a stop lets it finish, and the
container leaves once its last request is done; a freed slot goes to the next request."""

from __future__ import annotations

import asyncio

import pytest

from ketch._utils.protocol import messages as m

from .fakes import Sim, run

pytestmark = [pytest.mark.spec("W7")]


def test_an_old_versions_container_stops_after_its_last_request() -> None:
    async def body() -> None:
        sim = Sim()
        v1 = sim.deploy(max_inputs=2)
        first = asyncio.ensure_future(sim.sched.acquire_web(v1.function_id))
        (old,) = await sim.start_ready()
        second = asyncio.ensure_future(sim.sched.acquire_web(v1.function_id))
        await sim.settle()
        (req1, _), (req2, _) = first.result(), second.result()
        assert req1.container is req2.container is not None
        sim.deploy(version=2)
        await sim.settle()
        assert not old.stopped  # requests in flight are not cut short by a redeploy
        sim.sched.web_done(req1, "ok", 200)
        await sim.settle()
        assert not old.stopped  # one request still holds it
        sim.sched.web_done(req2, "ok", 200)
        await sim.settle()
        assert old.channel.of_kind(m.STOP) and old.handle.exited

    run(body())


def test_a_draining_container_stops_when_its_request_is_done() -> None:
    async def body() -> None:
        sim = Sim()
        fdef = sim.deploy()
        waiting = asyncio.ensure_future(sim.sched.acquire_web(fdef.function_id))
        (c,) = await sim.start_ready()
        await sim.settle()
        req, _ = waiting.result()
        container = sim.sched.containers[c.cid]
        sim.sched.lifecycle.stop(container, "scaledown")
        await sim.settle()
        assert container.state == "draining" and not c.stopped
        sim.sched.web_done(req, "ok", 200)
        await sim.settle()
        assert c.channel.of_kind(m.STOP) and c.handle.exited
        assert container.stop_reason == "scaledown"

    run(body())


def test_a_finished_request_hands_its_slot_to_the_next_one() -> None:
    async def body() -> None:
        sim = Sim()
        fdef = sim.deploy(max_containers=1)
        first = asyncio.ensure_future(sim.sched.acquire_web(fdef.function_id))
        (c,) = await sim.start_ready()
        second = asyncio.ensure_future(sim.sched.acquire_web(fdef.function_id))
        await sim.settle()
        req1, _ = first.result()
        assert not second.done()  # one slot (max_inputs=1), taken
        sim.sched.web_done(req1, "ok", 200)
        await sim.settle()
        req2, _ = second.result()
        assert req2.container is req1.container and not c.stopped
        # Done twice (the gateway's finally after an error path) changes nothing more.
        sim.sched.web_done(req1, "ok", 200)
        await sim.settle()
        assert req2.iid in sim.sched.containers[c.cid].inflight

    run(body())


def test_a_request_given_up_while_queued_leaves_the_queue() -> None:
    async def body() -> None:
        sim = Sim()
        fdef = sim.deploy(max_containers=1)
        first = asyncio.ensure_future(sim.sched.acquire_web(fdef.function_id))
        (c,) = await sim.start_ready()
        queued = asyncio.ensure_future(sim.sched.acquire_web(fdef.function_id))
        await sim.settle()
        assert len(sim.pool(fdef).queue) == 1
        queued.cancel()  # the client went away while it waited
        await sim.settle()
        assert not sim.pool(fdef).queue
        req1, _ = first.result()
        sim.sched.web_done(req1, "ok", 200)
        await sim.settle()
        assert not sim.sched.containers[c.cid].inflight  # nothing was handed to the gone one

    run(body())
