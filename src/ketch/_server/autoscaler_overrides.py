"""Autoscaler settings changed on a live function (`Function.update_autoscaler`): applied
to its pools at once, and kept in the store for the version they were set on, so that a
server restart keeps them and the app's next deploy (a new version) resets them."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from ketch._utils.protocol.spec import OptionsSpec
from ketch.exception import InvalidError, NotFoundError

if TYPE_CHECKING:
    from ketch._server.model import FunctionDef
    from ketch._server.scheduler import Scheduler
    from ketch._server.store import Store

SETTINGS = ("min_containers", "max_containers", "buffer_containers", "scaledown_window")


def _key(function_id: str) -> str:
    return f"autoscaler:{function_id}"


def _checked(current: OptionsSpec, changes: dict[str, Any], label: str) -> OptionsSpec:
    """`current` with `changes`, held to the rules a deploy's options are (InvalidError)."""
    unknown = sorted(set(changes) - set(SETTINGS))
    if unknown:
        raise InvalidError(f"{label}: unknown autoscaler setting(s) {', '.join(unknown)}")
    try:
        return OptionsSpec.model_validate({**current.model_dump(), **changes})
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'settings'}: {e['msg']}" for e in exc.errors()
        )
        raise InvalidError(f"{label}: {problems} (nothing was changed)") from None


def _live(scheduler: Scheduler, function_id: str) -> FunctionDef:
    fdef = scheduler.functions.get(function_id)
    if fdef is None:
        raise NotFoundError(f"function {function_id} is not deployed (or its app was stopped)")
    return fdef


def update(
    scheduler: Scheduler, store: Store, function_id: str, changes: dict[str, Any]
) -> dict[str, Any]:
    """Change the live function's settings now; returns all four as they now are."""
    fdef = _live(scheduler, function_id)
    old = fdef.options
    new = _checked(old, changes, fdef.tag)
    saved = _saved(store, fdef) or {}
    store.set_meta(
        _key(function_id),
        json.dumps({"version": fdef.version, "settings": {**saved, **changes}}),
    )
    changed = {k: getattr(new, k) for k in SETTINGS if getattr(new, k) != getattr(old, k)}
    fdef.spec = fdef.spec.model_copy(update={"options": new})
    for pool in list(scheduler.pools.values()):
        pf = pool.function
        if pool.retired or pf.function_id != function_id or pf.version != fdef.version:
            continue
        if pf is not fdef:
            # A with_options pool keeps the settings its handle overrode.
            own = {k: v for k, v in changed.items() if getattr(pf.options, k) == getattr(old, k)}
            if own:
                pf.spec = pf.spec.model_copy(update={"options": pf.options.model_copy(update=own)})
        scheduler.lifecycle.reconcile(pool)
    if new.min_containers > 0:
        # Warm containers are wanted before any traffic: the pool must exist now.
        scheduler.lifecycle.reconcile(scheduler.pool_for(fdef, None))
    return {k: getattr(new, k) for k in SETTINGS}


def _saved(store: Store, fdef: FunctionDef) -> dict[str, Any] | None:
    raw = store.get_meta(_key(fdef.function_id))
    if not raw:
        return None
    try:
        data = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(data, dict) or data.get("version") != fdef.version:
        return None  # set on an earlier version: a deploy since has reset them
    settings = data.get("settings")
    return settings if isinstance(settings, dict) else None


def restore(store: Store, fdef: FunctionDef) -> FunctionDef:
    """`fdef` with the settings `update` gave its version, before it goes live again."""
    saved = _saved(store, fdef)
    if saved:
        try:
            options = _checked(fdef.options, saved, fdef.tag)
        except InvalidError:
            return fdef  # written by another server's rules: the deploy's values stand
        fdef.spec = fdef.spec.model_copy(update={"options": options})
    return fdef


def stats(scheduler: Scheduler, function_id: str) -> dict[str, int]:
    """Modal's `FunctionStats`: inputs waiting for a container, and containers running."""
    _live(scheduler, function_id)
    pools = [p for p in scheduler.pools.values() if p.function.function_id == function_id]
    return {
        "backlog": sum(len(p.queue) for p in pools),
        "num_total_runners": sum(len(p.live()) for p in pools),
    }
