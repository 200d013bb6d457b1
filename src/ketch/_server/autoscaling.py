"""The autoscaling decision, as a pure function of a pool's state and the clock."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class PoolView:
    queued: int
    running: int  # inputs executing now
    min_containers: int = 0
    max_containers: int | None = None
    buffer_containers: int = 0
    max_inputs: int = 1
    target_inputs: int | None = None


def desired_containers(view: PoolView) -> int:
    """How many live containers the pool should have right now."""
    demand = view.queued + view.running
    per_container = max(1, view.target_inputs or view.max_inputs)
    want = math.ceil(demand / per_container)
    if demand > 0:
        want += view.buffer_containers
    want = max(want, view.min_containers)
    if view.max_containers is not None:
        want = min(want, view.max_containers)
    return want


def containers_to_retire(
    idle_since: dict[str, float], live: int, desired: int, now: float, scaledown_window: float
) -> list[str]:
    """Idle containers past the scale-down window, oldest idle first, never below desired."""
    surplus = live - desired
    if surplus <= 0:
        return []
    expired = sorted(
        (since, cid) for cid, since in idle_since.items() if now - since >= scaledown_window
    )
    return [cid for _, cid in expired[:surplus]]
