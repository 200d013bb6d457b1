"""Order: inputs of one pool run in the order they came; pools of one function (class
parameters, option overrides) queue apart, each in its own order, none behind another."""

from __future__ import annotations

import pytest

from .fakes import FakeContainer, Sim, run

pytestmark = [pytest.mark.spec("S4"), pytest.mark.spec("S6")]


async def _drain(sim: Sim, c: FakeContainer, n: int) -> None:
    """Finish the container's inputs one at a time, `n` in all."""
    for _ in range(n):
        await sim.settle()
        c.out(c.inputs()[-1])
    await sim.settle()


def test_one_pool_runs_its_inputs_in_submit_order() -> None:
    async def body() -> None:
        sim = Sim()
        f = sim.deploy(max_containers=1)
        order = [f"in-{i}" for i in (3, 1, 4, 0, 5, 9, 2, 6)]
        for iid in order:
            sim.submit(f, iid)
        (c,) = await sim.start_ready()
        await _drain(sim, c, len(order))
        assert c.inputs() == order
        assert [r["iid"] for r in sim.client.of_kind("res")] == order

    run(body())


def test_a_retried_input_goes_to_the_back_of_the_queue() -> None:
    async def body() -> None:
        sim = Sim()
        f = sim.deploy(max_containers=1, retries={"max_retries": 1, "initial_delay": 0})
        for iid in ("in-a", "in-b", "in-c"):
            sim.submit(f, iid)
        (c,) = await sim.start_ready()
        c.out("in-a", ok=False)
        await sim.advance(0)
        await _drain(sim, c, 3)
        assert c.inputs() == ["in-a", "in-b", "in-c", "in-a"]

    run(body())


def test_parameter_pools_queue_apart_in_their_own_order() -> None:
    async def body() -> None:
        sim = Sim()
        f = sim.deploy(max_containers=1)
        for i in range(3):
            sim.submit(f, f"a-{i}", params=b"A")
            sim.submit(f, f"b-{i}", params=b"B")
        started = await sim.start_ready()
        assert len(started) == 2  # one pool each; max_containers holds per pool
        by_params = {sim.sched.containers[c.cid].pool.params: c for c in started}
        ca, cb = by_params[b"A"], by_params[b"B"]
        assert ca.init is not None and ca.init["params"] == b"A"
        await _drain(sim, cb, 3)  # B does not wait for A
        assert cb.inputs() == ["b-0", "b-1", "b-2"]
        assert ca.inputs() == ["a-0"]
        await _drain(sim, ca, 3)
        assert ca.inputs() == ["a-0", "a-1", "a-2"]

    run(body())


def test_an_options_override_gets_its_own_pool_with_its_options() -> None:
    async def body() -> None:
        sim = Sim()
        f = sim.deploy(max_containers=1, timeout=300)
        sim.submit(f, "plain-0")
        sim.submit(f, "plain-1")
        for i in range(2):
            sim.submit(f, f"wide-{i}", options={"max_containers": 2, "timeout": 5})
        started = await sim.start_ready()
        assert len(started) == 3  # 1 for the plain pool, 2 for the override
        wide = [c for c in started if c.inputs()[0].startswith("wide")]
        assert sorted(i for c in wide for i in c.inputs()) == ["wide-0", "wide-1"]
        pools = {sim.sched.containers[c.cid].pool for c in started}
        assert sorted(p.function.options.timeout for p in pools) == [5, 300]

    run(body())
