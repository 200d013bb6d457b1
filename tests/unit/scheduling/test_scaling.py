"""Scaling: containers start with demand within min/buffer/max, and an idle one stops only
after the scale-down window on the scheduler's clock."""

from __future__ import annotations

import pytest

from ketch._utils.protocol import messages as m

from .fakes import Sim, run

pytestmark = [pytest.mark.spec("S1"), pytest.mark.spec("S3")]

_EARLY = 0.125


def test_an_idle_container_stops_only_after_the_scaledown_window() -> None:
    async def body() -> None:
        sim = Sim()
        f = sim.deploy(scaledown_window=60)
        sim.submit(f, "in-1")
        (c,) = await sim.start_ready()
        await sim.advance(30)  # busy time does not count as idle
        c.out("in-1")
        await sim.settle()
        await sim.advance(60 - _EARLY)
        await sim.tick()
        assert not c.stopped
        await sim.advance(_EARLY)
        await sim.tick()
        assert c.channel.of_kind(m.STOP) == [{"t": m.STOP}]
        assert c.handle.exited
        assert sim.sched.containers == {}

    run(body())


def test_work_restarts_the_idle_window() -> None:
    async def body() -> None:
        sim = Sim()
        f = sim.deploy(scaledown_window=60)
        sim.submit(f, "in-1")
        (c,) = await sim.start_ready()
        c.out("in-1")
        await sim.advance(40)
        sim.submit(f, "in-2")
        await sim.settle()
        c.out("in-2")
        await sim.advance(40)  # 80 s since the first, 40 since the last input
        await sim.tick()
        assert not c.stopped
        await sim.advance(20)
        await sim.tick()
        assert c.stopped

    run(body())


def test_min_containers_start_before_traffic_and_never_scale_down() -> None:
    async def body() -> None:
        sim = Sim()
        sim.deploy(min_containers=2, scaledown_window=2)
        warm = await sim.start_ready()
        assert len(warm) == 2
        await sim.advance(3600)
        await sim.tick()
        assert not any(c.stopped for c in warm)
        assert len(sim.backend.containers) == 2

    run(body())


def test_a_lost_warm_container_is_replaced() -> None:
    async def body() -> None:
        sim = Sim()
        sim.deploy(min_containers=1)
        (c1,) = await sim.start_ready()
        c1.crash()
        await sim.settle()
        await sim.tick()
        assert len(sim.backend.live()) == 1 and sim.backend.live()[0] is not c1

    run(body())


def test_max_containers_caps_the_pool_and_the_rest_waits() -> None:
    async def body() -> None:
        sim = Sim()
        f = sim.deploy(max_containers=2)
        for i in range(5):
            sim.submit(f, f"in-{i}")
        started = await sim.start_ready()
        await sim.tick()
        assert len(sim.backend.containers) == 2
        assert sorted(i for c in started for i in c.inputs()) == ["in-0", "in-1"]
        assert len(sim.pool(f).queue) == 3

    run(body())


def test_buffer_containers_stand_by_while_active_and_go_when_idle() -> None:
    async def body() -> None:
        sim = Sim()
        f = sim.deploy(buffer_containers=1, scaledown_window=10)
        sim.submit(f, "in-1")
        started = await sim.start_ready()
        assert len(started) == 2  # one for the input, one spare
        busy = next(c for c in started if c.inputs())
        spare = next(c for c in started if not c.inputs())
        await sim.advance(10)
        await sim.tick()
        assert not spare.stopped  # still wanted: there is demand
        busy.out("in-1")
        await sim.settle()
        await sim.advance(10)
        await sim.tick()
        assert spare.stopped and busy.stopped

    run(body())


@pytest.mark.parametrize(
    ("target_inputs", "want"), [(None, 3), (5, 5)], ids=["max_inputs", "target_inputs"]
)
def test_concurrent_inputs_pack_containers_to_max_or_target_inputs(
    target_inputs: int | None, want: int
) -> None:
    async def body() -> None:
        sim = Sim()
        f = sim.deploy(max_inputs=10, target_inputs=target_inputs)
        for i in range(25):
            sim.submit(f, f"in-{i}")
        await sim.settle()
        assert len(sim.backend.containers) == want

    run(body())
