"""Start-up failures (R5): what waits fails at once with the start-up error, and a pool
kept warm is not restarted before the backoff is over; the start-up time limit."""

from __future__ import annotations

import pytest

from ketch._server.lifecycle import STARTUP_BACKOFF
from ketch.exception import ExecutionError

from .fakes import Sim, run

pytestmark = [pytest.mark.spec("R5"), pytest.mark.spec("T2")]

_EARLY = 0.125


def test_queued_inputs_fail_fast_with_the_startup_error() -> None:
    async def body() -> None:
        sim = Sim()
        f = sim.deploy(max_containers=1)
        for i in range(3):
            sim.submit(f, f"in-{i}")
        await sim.settle()
        (c,) = sim.backend.containers
        c.startup_failed("no module named app_module")
        c.exit(1)
        await sim.settle()
        for i in range(3):
            assert "no module named app_module" in str(sim.error(f"in-{i}"))
        assert c.inputs() == []
        assert len(sim.backend.containers) == 1  # no restart loop
        assert not sim.pool(f).queue

    run(body())


def test_a_warm_pool_restarts_only_after_the_backoff() -> None:
    async def body() -> None:
        sim = Sim()
        sim.deploy(min_containers=1)
        await sim.settle()
        (c,) = sim.backend.containers
        c.startup_failed()
        c.exit(1)
        await sim.settle()
        await sim.advance(STARTUP_BACKOFF - _EARLY)
        await sim.tick()
        assert len(sim.backend.containers) == 1, "restarted inside the backoff"
        await sim.advance(_EARLY)
        await sim.tick()
        assert len(sim.backend.containers) == 2

    run(body())


def test_a_new_input_during_the_backoff_still_gets_a_container() -> None:
    # The backoff stops automatic restarts only; a caller who asks again gets a try.
    async def body() -> None:
        sim = Sim()
        f = sim.deploy()
        sim.submit(f, "in-1")
        await sim.settle()
        sim.backend.containers[0].startup_failed()
        sim.backend.containers[0].exit(1)
        await sim.settle()
        sim.submit(f, "in-2")
        (c2,) = await sim.start_ready()
        assert c2.inputs() == ["in-2"]

    run(body())


def test_a_backend_that_cannot_start_fails_what_waits() -> None:
    async def body() -> None:
        sim = Sim()
        sim.backend.start_error = OSError("no space left on device")
        f = sim.deploy()
        sim.submit(f, "in-1")
        await sim.settle()
        err = sim.error("in-1")
        assert isinstance(err, ExecutionError) and "no space left on device" in str(err)
        assert sim.sched.containers == {}

    run(body())


def test_a_container_silent_past_startup_timeout_is_killed_and_its_inputs_fail() -> None:
    async def body() -> None:
        sim = Sim()
        f = sim.deploy(startup_timeout=30)
        sim.submit(f, "in-1")
        await sim.settle()
        (c,) = sim.backend.containers
        c.connect()  # connects, but never says READY
        await sim.advance(30 - _EARLY)
        assert not c.handle.killed
        await sim.advance(_EARLY)
        assert c.handle.killed
        assert "startup_timeout=30s" in str(sim.error("in-1"))

    run(body())
