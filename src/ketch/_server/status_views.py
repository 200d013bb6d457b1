"""What the scheduler's state looks like from outside: per-function status for `ketch app
status`, container rows for `ketch container list`, and the words for why inputs wait and
how a container ended."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ketch._server.model import Container, FunctionDef, Pool


def status(
    functions: Iterable[FunctionDef], pools: Iterable[Pool], app_id: str | None, now: float
) -> dict[str, dict[str, Any]]:
    """Per function (`app_id/tag` keys without an app filter): containers by state,
    queue depth, inputs running and why queued inputs wait. A plain dict for the API."""
    out: dict[str, dict[str, Any]] = {}

    def entry(fdef: FunctionDef) -> dict[str, Any]:
        key = fdef.tag if app_id is not None else f"{fdef.app_name}/{fdef.tag}"
        if key not in out:
            out[key] = {
                "app_id": fdef.app_id,
                "function": fdef.tag,
                "queued": 0,
                "running": 0,
                "containers": {"starting": 0, "idle": 0, "busy": 0, "draining": 0},
                "pools": 0,
                "waiting": [],
                "max_containers": fdef.options.max_containers,
                "min_containers": fdef.options.min_containers,
                "gpu": fdef.options.gpu,
            }
        return out[key]

    for fdef in functions:
        if app_id is None or fdef.app_id == app_id:
            entry(fdef)
    for pool in pools:
        fdef = pool.function
        if app_id is not None and fdef.app_id != app_id:
            continue
        e = entry(fdef)
        e["pools"] += 1
        e["queued"] += len(pool.queue)
        e["running"] += pool.running_inputs()
        for c in pool.containers.values():
            state = c.state
            if state == "ready":
                state = "busy" if c.inflight else "idle"
            if state in e["containers"]:
                e["containers"][state] += 1
        for reason in waiting_reasons(pool, now):
            if reason not in e["waiting"]:
                e["waiting"].append(reason)
    return out


def container_rows(
    containers: Iterable[Container], app_id: str | None, now_wall: float, now: float
) -> list[dict[str, Any]]:
    """Live containers: id, app, function, state (starting/idle/busy/draining), inputs
    in flight, start time and process id."""
    rows = []
    for c in containers:
        fdef = c.pool.function
        if app_id is not None and fdef.app_id != app_id:
            continue
        state = c.state
        if state == "ready":
            state = "busy" if c.inflight else "idle"
        rows.append(
            {
                "container_id": c.cid,
                "app_id": fdef.app_id,
                "app": fdef.app_name,
                "function": fdef.tag,
                "version": fdef.version,
                "state": state,
                "inflight": len(c.inflight),
                "started": now_wall - (now - c.started),
                "pid": getattr(c.handle, "pid", None),
                # The cluster node it runs on (Ray: None until placed); "local" on this machine.
                "node": getattr(c.handle, "node", "local"),
            }
        )
    return sorted(rows, key=lambda r: r["started"])


def waiting_reasons(pool: Pool, now: float) -> list[str]:
    """Why the queued inputs of a pool are not running yet, in words for `app status`."""
    if not pool.queue:
        return []
    reasons = []
    if pool.waiting_reason:
        reasons.append(pool.waiting_reason)
    if now < pool.backoff_until:
        reasons.append(
            f"waiting: crash-loop backoff after a failed start "
            f"({pool.backoff_until - now:.0f}s left)"
        )
    live = pool.live()
    cap = pool.function.options.max_containers
    if cap is not None and len(live) >= cap and not any(c.free_slots > 0 for c in live):
        reasons.append(f"waiting: at max_containers ({cap}), all slots busy")
    starting = sum(1 for c in live if c.state == "starting")
    if starting:
        reasons.append(f"waiting: {starting} container(s) starting")
    if pool.retired:
        reasons.append("waiting: an older version, handing its inputs to the new one")
    return reasons


def exit_text(c: Container, was: str, reason: str, code: int | None) -> str:
    """The platform event for a container's end, as `ketch app logs` shows it."""
    if was == "starting":
        return f"container failed to start ({reason}, exit code {code})"
    if c.stop_reason is not None and c.stop_reason != "uninterruptible":
        return f"container stopped ({c.stop_reason})"
    if c.inflight:
        return (
            f"container crashed ({reason}, exit code {code}) with {len(c.inflight)} "
            "input(s) in flight"
        )
    if c.stop_reason == "uninterruptible":
        return f"container killed ({reason})"
    return f"container exited ({reason}, exit code {code})"
