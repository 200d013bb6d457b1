"""`Function.update_autoscaler` on the server: settings changed on a live function take
effect at once, a refused change changes nothing, they outlive a restart of the same
version and not a new one; and `get_current_stats`' backlog and runners."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from ketch._server import autoscaler_overrides
from ketch._server.store import Store
from ketch.exception import InvalidError, NotFoundError

from .fakes import Sim, make_fdef, run

pytestmark = [pytest.mark.spec("C7"), pytest.mark.spec("S1")]


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(tmp_path / "k.db")
    yield s
    s.close()


def test_raising_min_containers_starts_containers_at_once(store: Store) -> None:
    async def body() -> None:
        sim = Sim()
        f = sim.deploy()
        await sim.settle()
        assert sim.backend.live() == []
        now = autoscaler_overrides.update(sim.sched, store, f.function_id, {"min_containers": 2})
        assert now["min_containers"] == 2 and now["max_containers"] is None
        warm = await sim.start_ready()
        assert len(warm) == 2  # no input was sent: the new minimum alone started them
        assert sim.sched.functions[f.function_id].version == 1  # no new version
        # Lowered again, the surplus goes after the scale-down window, as ever.
        autoscaler_overrides.update(
            sim.sched, store, f.function_id, {"min_containers": 0, "scaledown_window": 5}
        )
        await sim.advance(5)
        await sim.tick()
        assert all(c.stopped for c in warm)

    run(body())


def test_a_refused_change_changes_nothing(store: Store) -> None:
    async def body() -> None:
        sim = Sim()
        f = sim.deploy(max_containers=2)
        for bad in ({"min_containers": 3}, {"buffer_containers": -1}, {"cpu": 2}):
            with pytest.raises(InvalidError, match=r"nothing was changed|unknown"):
                autoscaler_overrides.update(sim.sched, store, f.function_id, bad)
        assert sim.sched.functions[f.function_id].options.min_containers == 0
        assert store.get_meta(f"autoscaler:{f.function_id}") is None
        await sim.settle()
        assert sim.backend.live() == []
        with pytest.raises(NotFoundError):
            autoscaler_overrides.update(sim.sched, store, "fu-gone", {"min_containers": 1})

    run(body())


def test_settings_outlive_a_restart_of_the_version_but_not_a_new_one(store: Store) -> None:
    async def body() -> None:
        sim = Sim()
        f = sim.deploy(max_containers=4)
        autoscaler_overrides.update(sim.sched, store, f.function_id, {"max_containers": 8})
        autoscaler_overrides.update(sim.sched, store, f.function_id, {"buffer_containers": 1})
        # The server's next start registers the same version afresh from its spec.
        again = autoscaler_overrides.restore(store, make_fdef(max_containers=4))
        assert again.options.max_containers == 8 and again.options.buffer_containers == 1
        redeployed = autoscaler_overrides.restore(store, make_fdef(version=2, max_containers=4))
        assert redeployed.options.max_containers == 4 and redeployed.options.buffer_containers == 0

    run(body())


def test_a_with_options_pool_keeps_what_its_handle_overrode(store: Store) -> None:
    async def body() -> None:
        sim = Sim()
        f = sim.deploy(max_containers=2)
        sim.submit(f, "in-1", options={"max_containers": 5})
        await sim.settle()
        (own,) = [p for p in sim.sched.pools.values() if p.function is not f]
        autoscaler_overrides.update(
            sim.sched, store, f.function_id, {"max_containers": 3, "scaledown_window": 9}
        )
        assert f.options.max_containers == 3
        assert own.function.options.max_containers == 5  # the handle's own
        assert own.function.options.scaledown_window == 9  # not overridden: follows

    run(body())


def test_stats_count_waiting_inputs_and_containers() -> None:
    async def body() -> None:
        sim = Sim()
        f = sim.deploy(max_containers=1)
        assert autoscaler_overrides.stats(sim.sched, f.function_id) == {
            "backlog": 0,
            "num_total_runners": 0,
        }
        for i in range(3):
            sim.submit(f, f"in-{i}")
        await sim.start_ready()
        assert autoscaler_overrides.stats(sim.sched, f.function_id) == {
            "backlog": 2,  # one runs, two wait
            "num_total_runners": 1,
        }

    run(body())
