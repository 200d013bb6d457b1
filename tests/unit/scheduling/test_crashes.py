"""Crashes: inputs a dead container held run again (first in line), up to the crash-loop
limit; stops that are ketch's own doing are not charged."""

from __future__ import annotations

import pytest

from ketch._server.lifecycle import MAX_CRASH_RERUNS
from ketch.exception import ExecutionError

from .fakes import Sim, run

pytestmark = [pytest.mark.spec("R6")]


def test_a_crash_requeues_the_inputs_in_flight_to_a_new_container() -> None:
    async def body() -> None:
        sim = Sim()
        f = sim.deploy(max_inputs=2)
        sim.submit(f, "in-1")
        sim.submit(f, "in-2")
        (c1,) = await sim.start_ready()
        assert sorted(c1.inputs()) == ["in-1", "in-2"]
        c1.crash(code=1)
        await sim.settle()
        assert sim.results() == {}  # nothing failed: both run again
        assert sim.sched.counters["crashes"] == 1
        (c2,) = await sim.start_ready()
        assert sorted(c2.inputs()) == ["in-1", "in-2"]
        c2.out("in-1")
        c2.out("in-2")
        await sim.settle()
        assert sim.res("in-1")["ok"] and sim.res("in-2")["ok"]

    run(body())


def test_a_crashed_input_goes_before_inputs_that_were_waiting() -> None:
    async def body() -> None:
        sim = Sim()
        f = sim.deploy(max_containers=1)
        sim.submit(f, "in-1")
        (c1,) = await sim.start_ready()
        sim.submit(f, "in-2")  # waits: the one container is busy
        await sim.settle()
        c1.crash()
        (c2,) = await sim.start_ready()
        assert c2.inputs() == ["in-1"]
        c2.out("in-1")
        await sim.settle()
        assert c2.inputs() == ["in-1", "in-2"]

    run(body())


def test_the_input_fails_after_the_crash_loop_limit() -> None:
    async def body() -> None:
        sim = Sim()
        f = sim.deploy()
        sim.submit(f, "in-1")
        for crash in range(1, MAX_CRASH_RERUNS + 2):
            (c,) = await sim.start_ready()
            assert c.inputs() == ["in-1"]
            c.crash(code=139)
            await sim.settle()
            if crash <= MAX_CRASH_RERUNS:
                assert "in-1" not in sim.results(), f"gave up after {crash} crashes"
        err = sim.error("in-1")
        assert isinstance(err, ExecutionError)
        assert f"crashed {MAX_CRASH_RERUNS + 1} times" in str(err)
        # Once failed, nothing more is started for it.
        await sim.settle()
        assert len(sim.backend.containers) == MAX_CRASH_RERUNS + 1
        assert sim.sched.counters["crashes"] == MAX_CRASH_RERUNS + 1

    run(body())


def test_an_operator_stop_requeues_without_charging_a_crash() -> None:
    async def body() -> None:
        sim = Sim()
        f = sim.deploy()
        sim.submit(f, "in-1")
        for _ in range(MAX_CRASH_RERUNS + 2):
            (c,) = await sim.start_ready()
            assert c.inputs() == ["in-1"]
            assert sim.sched.stop_container_by_id(c.cid) == {"stopped": c.cid, "requeued": 1}
            await sim.settle()
            assert c.handle.killed
        assert "in-1" not in sim.results()
        assert sim.sched.counters["crashes"] == 0

    run(body())


def test_inputs_cut_short_by_a_crash_run_again_in_their_order() -> None:
    async def body() -> None:
        sim = Sim()
        f = sim.deploy(max_inputs=3)
        for iid in ("in-1", "in-2", "in-3"):
            sim.submit(f, iid)
        (c1,) = await sim.start_ready()
        assert c1.inputs() == ["in-1", "in-2", "in-3"]
        c1.crash()
        (c2,) = await sim.start_ready()
        assert c2.inputs() == ["in-1", "in-2", "in-3"]  # not reversed by the re-queue

    run(body())
