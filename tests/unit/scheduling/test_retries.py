"""Retries: a failed attempt runs again after `ketch.Retries`' own delay, and not before."""

from __future__ import annotations

import pytest

from ketch.retries import Retries

from .fakes import Sim, run

pytestmark = [pytest.mark.spec("R1"), pytest.mark.spec("R2")]

# Binary fractions, so that "just before the delay" lands exactly on the fake clock.
_EARLY = 0.125


@pytest.mark.parametrize(
    ("max_retries", "coefficient", "initial", "cap"),
    [(3, 2.0, 1.0, 3.0), (2, 1.0, 0.5, 60.0), (4, 3.0, 2.0, 10.0)],
)
def test_each_retry_waits_the_delay_of_ketch_retries(
    max_retries: int, coefficient: float, initial: float, cap: float
) -> None:
    policy = Retries(
        max_retries, backoff_coefficient=coefficient, initial_delay=initial, max_delay=cap
    )

    async def body() -> None:
        sim = Sim()
        f = sim.deploy(
            retries={
                "max_retries": max_retries,
                "backoff_coefficient": coefficient,
                "initial_delay": initial,
                "max_delay": cap,
            }
        )
        sim.submit(f, "in-1")
        (c,) = await sim.start_ready()
        assert c.inputs() == ["in-1"]
        for k in range(1, max_retries + 1):
            c.out("in-1", ok=False)
            await sim.settle()
            delay = policy.delay_for(k)
            assert "in-1" not in sim.results()
            await sim.advance(delay - _EARLY)
            assert c.inputs().count("in-1") == k, f"retry {k} ran before its delay {delay}"
            await sim.advance(_EARLY)
            assert c.inputs().count("in-1") == k + 1, f"retry {k} did not run after {delay}"
        c.out("in-1", ok=False)  # the last attempt fails: the budget is spent
        await sim.settle()
        assert sim.res("in-1")["ok"] is False
        assert sim.sched.counters["retries"] == max_retries
        assert len(sim.backend.containers) == 1

    run(body())


def test_success_after_a_retry_reports_the_result_once() -> None:
    async def body() -> None:
        sim = Sim()
        f = sim.deploy(retries={"max_retries": 2, "initial_delay": 1.0})
        sim.submit(f, "in-1")
        (c,) = await sim.start_ready()
        c.out("in-1", ok=False)
        await sim.advance(1.0)
        c.out("in-1", ok=True, payload=b"fine")
        await sim.settle()
        assert [r["iid"] for r in sim.client.of_kind("res")] == ["in-1"]
        assert sim.res("in-1")["ok"] is True and sim.res("in-1")["payload"] == b"fine"

    run(body())


def test_without_retries_a_failure_is_final_at_once() -> None:
    async def body() -> None:
        sim = Sim()
        f = sim.deploy()
        sim.submit(f, "in-1")
        (c,) = await sim.start_ready()
        c.out("in-1", ok=False)
        await sim.settle()
        assert sim.res("in-1")["ok"] is False
        await sim.advance(120.0)
        assert c.inputs() == ["in-1"]

    run(body())
