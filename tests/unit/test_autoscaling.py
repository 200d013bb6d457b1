"""The autoscaling policy is a pure function: checked here without processes or clocks."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from ketch._server.autoscaling import PoolView, containers_to_retire, desired_containers


def test_scale_from_zero_on_demand() -> None:
    assert desired_containers(PoolView(queued=0, running=0)) == 0
    assert desired_containers(PoolView(queued=1, running=0)) == 1
    assert desired_containers(PoolView(queued=5, running=0)) == 5


def test_concurrency_packs_inputs() -> None:
    assert desired_containers(PoolView(queued=25, running=0, max_inputs=10)) == 3
    # target_inputs aims lower than the hard cap.
    assert desired_containers(PoolView(queued=25, running=0, max_inputs=10, target_inputs=5)) == 5


def test_min_max_and_buffer() -> None:
    assert desired_containers(PoolView(queued=0, running=0, min_containers=2)) == 2
    assert desired_containers(PoolView(queued=50, running=0, max_containers=3)) == 3
    assert desired_containers(PoolView(queued=1, running=0, buffer_containers=2)) == 3
    # Buffers only while active.
    assert desired_containers(PoolView(queued=0, running=0, buffer_containers=2)) == 0


@given(
    queued=st.integers(0, 500),
    running=st.integers(0, 500),
    mn=st.integers(0, 10),
    mx=st.one_of(st.none(), st.integers(1, 50)),
    buf=st.integers(0, 5),
    max_inputs=st.integers(1, 100),
)
def test_policy_bounds(
    queued: int, running: int, mn: int, mx: int | None, buf: int, max_inputs: int
) -> None:
    if mx is not None and mx < mn:
        mx = mn or 1
    want = desired_containers(PoolView(queued, running, mn, mx, buf, max_inputs))
    if mx is not None:
        assert want <= mx
    assert want >= min(mn, mx if mx is not None else mn)
    if queued + running > 0 and (mx is None or mx > 0):
        assert want >= 1


def test_retire_only_idle_past_window_and_never_below_desired() -> None:
    idle = {"a": 0.0, "b": 50.0, "c": 100.0}
    assert containers_to_retire(idle, live=3, desired=0, now=100.0, scaledown_window=60) == ["a"]
    assert containers_to_retire(idle, live=3, desired=0, now=200.0, scaledown_window=60) == [
        "a",
        "b",
        "c",
    ]
    assert containers_to_retire(idle, live=3, desired=2, now=200.0, scaledown_window=60) == ["a"]
    assert containers_to_retire(idle, live=3, desired=3, now=200.0, scaledown_window=60) == []


class _FakePool:
    """A pool driven by the policy under a fake clock: the scheduler's scale-up and
    scale-down steps, without processes (containers start at once and are idle unless
    inputs keep them busy)."""

    def __init__(self, **limits: int | None) -> None:
        self.limits = limits
        self.now = 0.0
        self.idle_since: dict[str, float] = {}
        self.busy = 0
        self._n = 0

    def step(self, demand: int, window: float = 60.0) -> int:
        view = PoolView(queued=demand, running=0, **self.limits)  # type: ignore[arg-type]
        want = desired_containers(view)
        for _ in range(want - len(self.idle_since)):
            self._n += 1
            self.idle_since[f"c{self._n}"] = self.now
        if demand:
            for cid in self.idle_since:
                self.idle_since[cid] = self.now  # in use: not idle
        for cid in containers_to_retire(
            dict(self.idle_since), len(self.idle_since), want, self.now, window
        ):
            del self.idle_since[cid]
        return len(self.idle_since)

    def advance(self, seconds: float) -> None:
        self.now += seconds


def test_fake_clock_scale_up_then_down_after_the_window_never_below_min() -> None:
    pool = _FakePool(min_containers=1, max_containers=5, buffer_containers=1, max_inputs=10)
    assert pool.step(0) == 1  # min keeps one warm with no traffic
    assert pool.step(25) == 4  # 3 for 25 inputs at 10 each, plus one spare
    assert pool.step(200) == 5  # capped by max_containers
    pool.advance(30)
    assert pool.step(0) == 5  # idle, but inside the 60 s window
    pool.advance(31)
    assert pool.step(0) == 1  # past the window: down to min, never below
    pool.advance(600)
    assert pool.step(0) == 1


def test_fake_clock_scale_to_zero_and_target_inputs() -> None:
    pool = _FakePool(max_inputs=10, target_inputs=4)
    assert pool.step(8) == 2  # aims at 4 per container, not the hard cap of 10
    pool.advance(2)
    assert pool.step(0, window=2) == 0  # 2 s window: back to zero
