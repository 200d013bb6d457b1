"""Redeploys: registering a new version retires the old pool. Its idle containers stop,
busy ones finish first, and inputs still queued move to the new version."""

from __future__ import annotations

import pytest

from ketch._utils.protocol import messages as m

from .fakes import Sim, run

pytestmark = [pytest.mark.spec("W7")]


def test_idle_containers_of_the_old_version_stop_at_once() -> None:
    async def body() -> None:
        sim = Sim()
        v1 = sim.deploy(min_containers=2)
        c1, c2 = await sim.start_ready()
        sim.deploy(version=2)
        await sim.settle()
        assert c1.channel.of_kind(m.STOP) and c2.channel.of_kind(m.STOP)
        assert c1.handle.exited and c2.handle.exited
        assert f"{v1.function_id}:1" in sim.backend.retired  # its fork template goes too
        assert not any(p.function is v1 for p in sim.sched.pools.values())

    run(body())


def test_queued_inputs_move_to_the_new_version() -> None:
    async def body() -> None:
        sim = Sim()
        v1 = sim.deploy(max_containers=1)
        sim.submit(v1, "in-1")
        (old,) = await sim.start_ready()
        sim.submit(v1, "in-2")
        sim.submit(v1, "in-3")
        await sim.settle()
        assert old.inputs() == ["in-1"]
        v2 = sim.deploy(version=2, max_containers=1)
        (new,) = await sim.start_ready()
        assert new.spec.env["KETCH_CONTAINER_ID"] == new.cid
        assert new.inputs() == ["in-2"]  # in order, on the new version
        assert not sim.pool(v1).queue if v1 is not None else True
        new.out("in-2")
        await sim.settle()
        assert new.inputs() == ["in-2", "in-3"]
        assert all(
            inp.function is sim.pool(v2).function
            for inp in sim.sched.inputs.values()
            if inp.iid == "in-3"
        )

    run(body())


def test_a_busy_old_container_finishes_its_input() -> None:
    async def body() -> None:
        sim = Sim()
        v1 = sim.deploy()
        sim.submit(v1, "in-1")
        (old,) = await sim.start_ready()
        sim.deploy(version=2)
        await sim.settle()
        assert not old.stopped  # it is not cut short
        old.out("in-1", payload=b"v1 result")
        await sim.settle()
        assert sim.res("in-1")["payload"] == b"v1 result"

    run(body())


def test_a_busy_old_container_stops_once_its_input_is_done() -> None:
    async def body() -> None:
        sim = Sim()
        v1 = sim.deploy()
        sim.submit(v1, "in-1")
        (old,) = await sim.start_ready()
        sim.deploy(version=2)
        await sim.settle()
        old.out("in-1")
        await sim.settle()
        await sim.advance(3600)
        await sim.tick()
        assert old.stopped

    run(body())


def test_a_container_of_the_old_version_still_starting_stops() -> None:
    async def body() -> None:
        sim = Sim()
        v1 = sim.deploy()
        sim.submit(v1, "in-1")
        await sim.settle()
        (old,) = sim.backend.containers  # still starting at the redeploy
        sim.deploy(version=2)
        await sim.settle()
        assert old.stopped and old.connect() is None
        (new,) = await sim.start_ready()
        assert new.inputs() == ["in-1"]
        assert sim.sched.counters["crashes"] == 0 and "in-1" not in sim.results()

    run(body())


def test_an_old_pool_with_nothing_left_is_dropped_at_the_redeploy() -> None:
    async def body() -> None:
        sim = Sim()
        v1 = sim.deploy(scaledown_window=2)
        sim.submit(v1, "in-1")
        (c,) = await sim.start_ready()
        c.out("in-1")
        await sim.settle()
        await sim.advance(5)
        await sim.tick()
        assert c.stopped and not sim.pool(v1).containers  # scaled to zero; the pool stays
        for version in range(2, 6):
            sim.deploy(version=version)
            await sim.settle()
        # Redeploys of an idle function leave no pool of any old version behind.
        assert {p.function.version for p in sim.sched.pools.values()} <= {5}

    run(body())
