"""The prefetch window (`_server/prefetch.py`): inputs sent to a container ahead of a free
slot, sized from the function's run time; their clocks start when the container says they
started; a crash, a drain or a redeploy gives back those that had not started, uncharged
and in order."""

from __future__ import annotations

import pytest

from ketch._utils.protocol import messages as m
from ketch.exception import FunctionTimeoutError

from .fakes import FakeContainer, Sim, run

pytestmark = [pytest.mark.spec("S4")]


def _sim(window: int = 4) -> Sim:
    sim = Sim()
    sim.sched.prefetch = window
    sim.sched.prefetch_budget = 3600.0  # any measured run time opens the whole window
    return sim


def _prefetched(c: FakeContainer) -> list[str]:
    return [msg["iid"] for msg in c.channel.of_kind(m.INPUT) if msg.get("prefetched")]


async def _measured(sim: Sim, c: FakeContainer, iid: str, seconds: float = 0.01) -> None:
    """Let `c` finish its first input after `seconds`: the pool's run time is known."""
    await sim.advance(seconds)
    c.out(iid)
    await sim.settle()


def test_the_window_opens_once_a_run_time_is_known_and_keeps_fifo() -> None:
    async def body() -> None:
        sim = _sim(window=3)
        f = sim.deploy(max_containers=1)
        for i in range(8):
            sim.submit(f, f"in-{i}")
        (c,) = await sim.start_ready()
        assert c.inputs() == ["in-0"]  # nothing measured yet: one per slot
        await _measured(sim, c, "in-0")
        # One into the free slot, three more ahead of it.
        assert c.inputs() == ["in-0", "in-1", "in-2", "in-3", "in-4"]
        assert _prefetched(c) == ["in-2", "in-3", "in-4"]
        c.out("in-1")
        await sim.settle()
        assert c.inputs()[-1] == "in-5" and _prefetched(c)[-1] == "in-5"
        for iid in ("in-2", "in-3", "in-4", "in-5", "in-6", "in-7"):
            c.say({"t": m.STARTED, "iid": iid})
            c.out(iid)
            await sim.settle()
        assert c.inputs() == [f"in-{i}" for i in range(8)]
        assert [r["iid"] for r in sim.client.of_kind(m.RES)] == [f"in-{i}" for i in range(8)]

    run(body())


def test_no_window_when_prefetch_is_off_or_the_function_is_slow() -> None:
    async def body() -> None:
        for window, budget in ((0, 3600.0), (8, 0.02)):
            sim = _sim(window)
            sim.sched.prefetch_budget = budget
            f = sim.deploy(max_containers=1)
            for i in range(4):
                sim.submit(f, f"in-{i}")
            (c,) = await sim.start_ready()
            await _measured(sim, c, "in-0", seconds=1.0)  # 1 s a run: over a 20 ms budget
            assert c.inputs() == ["in-0", "in-1"] and _prefetched(c) == []

    run(body())


def test_free_slots_of_every_container_fill_before_any_window() -> None:
    async def body() -> None:
        sim = _sim(window=4)
        f = sim.deploy(max_containers=2)
        sim.submit(f, "in-0")
        (c1,) = await sim.start_ready()
        await _measured(sim, c1, "in-0")
        for i in range(1, 4):
            sim.submit(f, f"in-{i}")
        await sim.settle()
        # The pool scaled up for the backlog; a second container's free slot comes first.
        starting = [c for c in sim.backend.live() if c.init is None]
        for c in starting:
            c.ready()
        await sim.settle()
        for i in range(4, 8):
            sim.submit(f, f"in-{i}")
        await sim.settle()
        live = sim.backend.live()
        assert len(live) == 2
        sent = sorted(iid for c in live for iid in c.inputs())
        assert sent == sorted(f"in-{i}" for i in range(8))
        c2 = live[1]
        assert c2.inputs() and c2.inputs()[0] not in _prefetched(c2)

    run(body())


def test_a_prefetched_input_times_out_from_its_start_not_its_send() -> None:
    async def body() -> None:
        sim = _sim(window=2)
        f = sim.deploy(max_containers=1, timeout=10)
        for i in range(4):
            sim.submit(f, f"in-{i}")
        (c,) = await sim.start_ready()
        await _measured(sim, c, "in-0")
        assert _prefetched(c) == ["in-2", "in-3"]
        for ran, nxt in (("in-1", "in-2"), ("in-2", "in-3")):
            await sim.advance(8)
            await sim.sweep()  # 8 s a run: in time; in-3 has waited 16 s by the second
            c.out(ran)
            c.say({"t": m.STARTED, "iid": nxt})
            await sim.settle()
        assert [sim.res(i)["ok"] for i in ("in-1", "in-2")] == [True, True]
        await sim.advance(9)
        await sim.sweep()  # 25 s after its send, 9 s into its run: in time
        assert "in-3" not in sim.results()
        await sim.advance(1.5)
        await sim.sweep()
        assert isinstance(sim.error("in-3"), FunctionTimeoutError)

    run(body())


def test_a_crash_charges_only_the_running_input_and_requeues_the_rest_first() -> None:
    async def body() -> None:
        sim = _sim(window=3)
        f = sim.deploy(max_containers=1)
        for i in range(6):
            sim.submit(f, f"in-{i}")
        (c1,) = await sim.start_ready()
        await _measured(sim, c1, "in-0")
        assert c1.inputs() == ["in-0", "in-1", "in-2", "in-3", "in-4"]
        c1.crash()
        await sim.settle()
        inputs = sim.sched.inputs
        assert inputs["in-1"].crashes == 1  # it was running
        assert [inputs[f"in-{i}"].crashes for i in (2, 3, 4)] == [0, 0, 0]
        assert not any(inputs[f"in-{i}"].prefetched for i in (1, 2, 3, 4))
        (c2,) = await sim.start_ready()
        # First in line, in the order they were sent; the run time is known already.
        assert c2.inputs() == ["in-1", "in-2", "in-3", "in-4"]
        assert _prefetched(c2) == ["in-2", "in-3", "in-4"]

    run(body())


def test_a_drained_container_hands_back_what_it_has_not_started() -> None:
    async def body() -> None:
        sim = _sim(window=3)
        f = sim.deploy(max_containers=2)
        for i in range(5):
            sim.submit(f, f"in-{i}")
        (c1,) = await sim.start_ready(1)
        await _measured(sim, c1, "in-0")
        c1_cid = c1.cid
        container = sim.sched.containers[c1_cid]
        sim.sched.lifecycle.stop(container, "scaledown")
        (unqueue,) = c1.channel.of_kind(m.UNQUEUE)
        assert unqueue["iids"] == ["in-2", "in-3", "in-4"]
        c1.say({"t": m.STARTED, "iid": "in-2"})  # it had started one meanwhile
        c1.say({"t": m.UNQUEUED, "iids": ["in-3", "in-4"]})
        await sim.settle()
        pool = sim.pool(f)
        assert [w.iid for w in pool.queue] == ["in-3", "in-4"]
        assert not c1.stopped  # in-1 and in-2 still run there
        c1.out("in-1")
        c1.out("in-2")
        await sim.settle()
        assert c1.stopped
        for c in sim.backend.live():
            if c.init is None:
                c.ready()
        await sim.settle()
        other = [c for c in sim.backend.containers if c.cid != c1_cid]
        assert [iid for c in other for iid in c.inputs()][:2] == ["in-3", "in-4"]

    run(body())


def test_a_redeploy_moves_prefetched_inputs_to_the_new_version() -> None:
    async def body() -> None:
        sim = _sim(window=2)
        f1 = sim.deploy(max_containers=1)
        for i in range(4):
            sim.submit(f1, f"in-{i}")
        (c1,) = await sim.start_ready()
        await _measured(sim, c1, "in-0")
        assert _prefetched(c1) == ["in-2", "in-3"]
        f2 = sim.deploy(max_containers=1, version=2)
        await sim.settle()
        (unqueue,) = c1.channel.of_kind(m.UNQUEUE)
        assert unqueue["iids"] == ["in-2", "in-3"]
        c1.say({"t": m.UNQUEUED, "iids": ["in-2", "in-3"]})
        await sim.settle()
        assert [sim.sched.inputs[i].function.version for i in ("in-2", "in-3")] == [2, 2]
        assert [w.iid for w in sim.pool(f2).queue] == ["in-2", "in-3"]
        c1.out("in-1")
        await sim.settle()
        assert c1.stopped  # the old version's container goes once its own input is done
        (c2,) = await sim.start_ready()
        assert c2.inputs() == ["in-2"]

    run(body())


def test_a_prefetched_input_is_never_sent_past_inputs_per_container() -> None:
    async def body() -> None:
        sim = _sim(window=8)
        f = sim.deploy(max_containers=1, inputs_per_container=3)
        for i in range(6):
            sim.submit(f, f"in-{i}")
        (c,) = await sim.start_ready()
        await _measured(sim, c, "in-0")
        assert c.inputs() == ["in-0", "in-1", "in-2"]

    run(body())
