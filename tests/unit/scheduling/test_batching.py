"""@batched (S5): a full batch goes at once as one BATCH message; a short one waits
batch_wait_ms from its oldest input."""

from __future__ import annotations

import pytest

from ketch._utils.protocol import messages as m

from .fakes import Sim, run

pytestmark = [pytest.mark.spec("S5")]


def test_a_full_batch_goes_at_once_as_one_message() -> None:
    async def body() -> None:
        sim = Sim()
        f = sim.deploy(min_containers=1, max_containers=1, batch_max_size=4, batch_wait_ms=250)
        (c,) = await sim.start_ready()
        for i in range(4):
            sim.submit(f, f"in-{i}")
        await sim.settle()
        assert c.batches() == [["in-0", "in-1", "in-2", "in-3"]]
        assert c.channel.of_kind(m.INPUT) == []
        (batch,) = c.channel.of_kind(m.BATCH)
        assert [i["args"] for i in batch["inputs"]] == [b"in-0", b"in-1", b"in-2", b"in-3"]

    run(body())


def test_a_short_batch_waits_batch_wait_ms_then_goes() -> None:
    async def body() -> None:
        sim = Sim()
        f = sim.deploy(min_containers=1, max_containers=1, batch_max_size=4, batch_wait_ms=250)
        (c,) = await sim.start_ready()
        sim.submit(f, "in-0")
        await sim.advance(0.125)
        sim.submit(f, "in-1")  # the wait counts from the oldest input
        await sim.advance(0.25 - 0.125 - 0.0625)
        assert c.batches() == []
        await sim.advance(0.0625)
        assert c.batches() == [["in-0", "in-1"]]

    run(body())


def test_inputs_past_a_full_batch_wait_for_the_next() -> None:
    async def body() -> None:
        sim = Sim()
        f = sim.deploy(min_containers=1, max_containers=1, batch_max_size=2, batch_wait_ms=250)
        (c,) = await sim.start_ready()
        for i in range(3):
            sim.submit(f, f"in-{i}")
        await sim.settle()
        assert c.batches() == [["in-0", "in-1"]]  # one batch at a time per container
        c.out("in-0")
        await sim.settle()
        assert len(c.batches()) == 1
        c.out("in-1")
        await sim.settle()
        # A short batch: in-2 still waits out its window, counted from its submit.
        assert len(c.batches()) == 1
        await sim.advance(0.25)
        assert c.batches() == [["in-0", "in-1"], ["in-2"]]
        assert sim.res("in-0")["ok"] and sim.res("in-1")["ok"]

    run(body())
