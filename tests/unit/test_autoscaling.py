"""The autoscaling policy is a pure function, checked here without processes or clocks;
then the real scheduler follows it, driven by a fake clock and backend."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from scheduling.fakes import Sim, run

from ketch._server.autoscaling import PoolView, containers_to_retire, desired_containers


def test_scale_from_zero_on_demand() -> None:
    assert desired_containers(PoolView(queued=0, running=0)) == 0
    assert desired_containers(PoolView(queued=1, running=0)) == 1
    assert desired_containers(PoolView(queued=5, running=0)) == 5


def test_concurrency_packs_inputs() -> None:
    assert desired_containers(PoolView(queued=25, running=0, max_inputs=10)) == 3
    # target_inputs aims lower than the hard cap.
    assert desired_containers(PoolView(queued=25, running=0, max_inputs=10, target_inputs=5)) == 5


def test_min_max_and_buffer() -> None:
    assert desired_containers(PoolView(queued=0, running=0, min_containers=2)) == 2
    assert desired_containers(PoolView(queued=50, running=0, max_containers=3)) == 3
    assert desired_containers(PoolView(queued=1, running=0, buffer_containers=2)) == 3
    # Buffers only while active.
    assert desired_containers(PoolView(queued=0, running=0, buffer_containers=2)) == 0


@given(
    queued=st.integers(0, 500),
    running=st.integers(0, 500),
    mn=st.integers(0, 10),
    mx=st.one_of(st.none(), st.integers(1, 50)),
    buf=st.integers(0, 5),
    max_inputs=st.integers(1, 100),
)
def test_policy_bounds(
    queued: int, running: int, mn: int, mx: int | None, buf: int, max_inputs: int
) -> None:
    if mx is not None and mx < mn:
        mx = mn or 1
    want = desired_containers(PoolView(queued, running, mn, mx, buf, max_inputs))
    if mx is not None:
        assert want <= mx
    assert want >= min(mn, mx if mx is not None else mn)
    if queued + running > 0 and (mx is None or mx > 0):
        assert want >= 1


def test_retire_only_idle_past_window_and_never_below_desired() -> None:
    idle = {"a": 0.0, "b": 50.0, "c": 100.0}
    assert containers_to_retire(idle, live=3, desired=0, now=100.0, scaledown_window=60) == ["a"]
    assert containers_to_retire(idle, live=3, desired=0, now=200.0, scaledown_window=60) == [
        "a",
        "b",
        "c",
    ]
    assert containers_to_retire(idle, live=3, desired=2, now=200.0, scaledown_window=60) == ["a"]
    assert containers_to_retire(idle, live=3, desired=3, now=200.0, scaledown_window=60) == []


async def _finish_all(sim: Sim) -> None:
    """Every container answers every input it holds."""
    await sim.settle()
    for c in sim.backend.live():
        for iid in c.inputs():
            c.out(iid)
    await sim.settle()


def test_fake_clock_scale_up_then_down_after_the_window_never_below_min() -> None:
    async def body() -> None:
        sim = Sim()
        f = sim.deploy(
            min_containers=1,
            max_containers=5,
            buffer_containers=1,
            max_inputs=10,
            scaledown_window=60,
        )
        await sim.start_ready()
        assert len(sim.backend.live()) == 1  # min keeps one warm with no traffic
        for i in range(25):
            sim.submit(f, f"a-{i}")
        await sim.start_ready()
        assert len(sim.backend.live()) == 4  # 3 for 25 inputs at 10 each, plus one spare
        for i in range(175):
            sim.submit(f, f"b-{i}")
        await sim.start_ready()
        assert len(sim.backend.live()) == 5  # capped by max_containers
        while len(sim.results()) < 200:
            await _finish_all(sim)
        await sim.advance(30)
        await sim.tick()
        assert len(sim.backend.live()) == 5  # idle, but inside the 60 s window
        await sim.advance(30)
        await sim.tick()
        assert len(sim.backend.live()) == 1  # past the window: down to min, never below
        await sim.advance(600)
        await sim.tick()
        assert len(sim.backend.live()) == 1
        assert len(sim.backend.containers) == 5  # and none was replaced on the way

    run(body())


def test_fake_clock_scale_to_zero_and_target_inputs() -> None:
    async def body() -> None:
        sim = Sim()
        f = sim.deploy(max_inputs=10, target_inputs=4, scaledown_window=2)
        for i in range(8):
            sim.submit(f, f"in-{i}")
        await sim.start_ready()
        assert len(sim.backend.live()) == 2  # aims at 4 per container, not the hard cap of 10
        await _finish_all(sim)
        await sim.advance(2)
        await sim.tick()
        assert sim.backend.live() == []  # 2 s window: back to zero
        assert sim.sched.containers == {}

    run(body())
