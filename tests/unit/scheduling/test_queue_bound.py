"""The queue bound (S3): past max_queue waiting inputs a new one is refused at once with
ResourceExhaustedError; what was accepted still runs."""

from __future__ import annotations

import pytest

from ketch.exception import ResourceExhaustedError

from .fakes import Sim, run

pytestmark = [pytest.mark.spec("S3")]


def test_the_submit_past_the_bound_is_refused_and_nothing_is_lost() -> None:
    async def body() -> None:
        sim = Sim(max_queue=2)
        f = sim.deploy(max_containers=1)
        for i in range(3):
            sim.submit(f, f"in-{i}")
        err = sim.error("in-2")
        assert isinstance(err, ResourceExhaustedError) and "limit is 2" in str(err)
        assert sim.sched.counters["queue_full"] == 1
        assert "in-2" not in sim.sched.inputs
        (c,) = await sim.start_ready()
        c.out("in-0")
        await sim.settle()
        c.out("in-1")
        await sim.settle()
        assert c.inputs() == ["in-0", "in-1"]
        assert sim.res("in-0")["ok"] and sim.res("in-1")["ok"]

    run(body())


def test_running_inputs_do_not_count_against_the_bound() -> None:
    async def body() -> None:
        sim = Sim(max_queue=1)
        f = sim.deploy(max_containers=1)
        sim.submit(f, "in-0")
        (c,) = await sim.start_ready()
        assert c.inputs() == ["in-0"]
        sim.submit(f, "in-1")  # the queue is empty again: accepted
        sim.submit(f, "in-2")  # one waits: refused
        assert "in-1" not in sim.results()
        assert isinstance(sim.error("in-2"), ResourceExhaustedError)
        c.out("in-0")
        await sim.settle()
        sim.submit(f, "in-3")  # room again
        assert "in-3" not in sim.results()
        assert sim.sched.counters["queue_full"] == 1

    run(body())
