"""The scheduler's periodic work: one pool that fails does not stop the others (issue 11)."""

from __future__ import annotations

import dataclasses
import logging

import pytest
from scheduling.fakes import Sim, run

from ketch._server.model import Container, Pool
from ketch._utils.protocol.spec import StoredFunction


def test_one_failing_pool_does_not_stop_the_others_scaling_down(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def body() -> None:
        sim = Sim()
        # Options that slipped past every check: built unchecked, as no deploy could.
        good = sim.deploy("broken")
        spec = StoredFunction.model_construct(**{**dict(good.spec), "options": "x"})
        fdef = dataclasses.replace(good, spec=spec)
        pool = sim.sched.pools[f"{fdef.function_id}:1:-"] = Pool(
            key=f"{fdef.function_id}:1:-", function=fdef, params=None
        )
        stuck = pool.containers["ta-broken"] = Container(
            cid="ta-broken", pool=pool, state="ready", idle_since=sim.clock.monotonic()
        )
        sim.sched.containers[stuck.cid] = stuck
        # After the broken one, so that the periodic pass meets the failure first.
        healthy = sim.deploy("healthy", scaledown_window=1)
        sim.submit(healthy, "in-1")
        (c,) = await sim.start_ready()
        c.out("in-1")
        await sim.advance(3600)
        with caplog.at_level(logging.ERROR, logger="ketch.scheduler"):
            await sim.tick()
            await sim.tick()
        record = sim.sched.containers.get(c.cid)
        assert record is None and c.stopped  # the healthy pool scaled down
        assert stuck.state == "ready"
        assert pool.waiting_reason is not None and "cannot scale" in pool.waiting_reason
        failures = [r for r in caplog.records if "periodic work" in r.getMessage()]
        assert len(failures) == 1 and "broken" in failures[0].getMessage()

    run(body())
