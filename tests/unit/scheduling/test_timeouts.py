"""Timeouts (T1/T3): an input past options.timeout is cancelled and fails with a timeout
error; a container stuck in code that ignores cancellation is killed, its other inputs rerun."""

from __future__ import annotations

import pytest

from ketch._utils.protocol import messages as m
from ketch.exception import FunctionTimeoutError

from .fakes import Sim, run

pytestmark = [pytest.mark.spec("T1"), pytest.mark.spec("T3")]

_EARLY = 0.125


def test_an_input_times_out_after_options_timeout() -> None:
    async def body() -> None:
        sim = Sim()
        f = sim.deploy(timeout=10)
        sim.submit(f, "in-1")
        (c,) = await sim.start_ready()
        await sim.advance(10 - _EARLY)
        await sim.sweep()
        assert "in-1" not in sim.results()
        assert c.channel.of_kind(m.CANCEL) == []
        await sim.advance(_EARLY)
        await sim.sweep()
        assert isinstance(sim.error("in-1"), FunctionTimeoutError)
        assert c.channel.of_kind(m.CANCEL) == [{"t": m.CANCEL, "iid": "in-1", "reason": "timeout"}]
        # A late answer from the container changes nothing.
        c.out("in-1", ok=True)
        await sim.settle()
        assert sim.res("in-1")["ok"] is False

    run(body())


def test_the_deadline_counts_from_the_start_of_the_run_not_the_submit() -> None:
    async def body() -> None:
        sim = Sim()
        f = sim.deploy(timeout=10, max_containers=1)
        sim.submit(f, "in-1")
        sim.submit(f, "in-2")
        (c,) = await sim.start_ready()
        await sim.advance(8)
        c.out("in-1")
        await sim.settle()
        assert c.inputs() == ["in-1", "in-2"]
        await sim.advance(8)  # in-2 waited 8 s, then ran 8 s: within its 10
        await sim.sweep()
        assert "in-2" not in sim.results()
        await sim.advance(2)
        await sim.sweep()
        assert isinstance(sim.error("in-2"), FunctionTimeoutError)

    run(body())


def test_a_timeout_uses_a_retry_when_there_are_retries() -> None:
    async def body() -> None:
        sim = Sim()
        f = sim.deploy(timeout=10, retries={"max_retries": 1, "initial_delay": 1.0})
        sim.submit(f, "in-1")
        (c,) = await sim.start_ready()
        await sim.advance(10)
        await sim.sweep()
        assert "in-1" not in sim.results()
        await sim.advance(1)
        assert c.inputs() == ["in-1", "in-1"]
        await sim.advance(10)
        await sim.sweep()
        assert isinstance(sim.error("in-1"), FunctionTimeoutError)

    run(body())


def test_a_stuck_container_is_killed_and_its_other_inputs_run_again() -> None:
    async def body() -> None:
        sim = Sim()
        f = sim.deploy(timeout=10, max_inputs=2)
        sim.submit(f, "in-1")
        (c1,) = await sim.start_ready()
        await sim.advance(5)
        sim.submit(f, "in-2")
        await sim.settle()
        assert c1.inputs() == ["in-1", "in-2"]
        await sim.advance(5)
        await sim.sweep()  # in-1 times out; its thread cannot be stopped
        c1.stuck("in-1")
        await sim.settle()
        assert c1.handle.killed
        assert isinstance(sim.error("in-1"), FunctionTimeoutError)
        assert "in-2" not in sim.results()
        (c2,) = await sim.start_ready()
        assert c2.inputs() == ["in-2"]
        assert sim.sched.counters["crashes"] == 0  # ketch's kill is not the input's crash
        c2.out("in-2")
        await sim.settle()
        assert sim.res("in-2")["ok"] is True

    run(body())
