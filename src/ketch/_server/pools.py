"""Pools: which pool an input belongs to (function, version, class parameters and option
overrides) and what a pool's function looks like with its overrides applied."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any

from ketch._server.autoscaling import PoolView
from ketch._server.model import FunctionDef, Pool
from ketch._utils.protocol.spec import NamedSecret, OptionsSpec, RetriesSpec


def pool_key(fdef: FunctionDef, params: bytes | None, overrides: dict[str, Any] | None) -> str:
    """One pool per function version, parameter set and set of option overrides."""
    digest = hashlib.sha256(params).hexdigest()[:16] if params else "-"
    if overrides:
        # Cls.with_options / with_concurrency / with_batching: a pool of its own (A6).
        blob = json.dumps(overrides, sort_keys=True, default=str).encode()
        digest += "+" + hashlib.sha256(blob).hexdigest()[:12]
    return f"{fdef.function_id}:{fdef.version}:{digest}"


def pool_view(pool: Pool) -> PoolView:
    """What the autoscaling policy sees of a pool."""
    opts = pool.function.options
    return PoolView(
        queued=len(pool.queue),
        running=pool.running_inputs(),
        # min_containers keeps the parameterless pool warm, not one per parameter set.
        min_containers=opts.min_containers if pool.params is None else 0,
        max_containers=opts.max_containers,
        buffer_containers=opts.buffer_containers,
        # A batched container takes a whole batch at once.
        max_inputs=pool.function.batch_size or pool.function.max_inputs,
        target_inputs=opts.target_inputs,
    )


# Options that Cls.with_options / with_concurrency / with_batching may override per pool.
OVERRIDABLE = frozenset(
    {
        "cpu",
        "memory",
        "gpu",
        "timeout",
        "startup_timeout",
        "retries",
        "min_containers",
        "max_containers",
        "buffer_containers",
        "scaledown_window",
        "max_inputs",
        "target_inputs",
        "batch_max_size",
        "batch_wait_ms",
    }
)


def with_overrides(fdef: FunctionDef, overrides: dict[str, Any]) -> FunctionDef:
    """The function as a pool with overridden options sees it. Unknown keys are ignored;
    secrets add named secrets (resolved as at deploy) and inline values. The overrides were
    checked where the call came in (`check_overrides`)."""
    given = {k: v for k, v in overrides.items() if k in OVERRIDABLE}
    typed: dict[str, Any] = {}
    for key, value in given.items():
        if value is None:
            value = OptionsSpec.model_fields[key].get_default()  # None: the default, as ever
        elif key == "retries":
            value = RetriesSpec.model_validate(value)
        elif isinstance(value, tuple):
            value = list(value)  # (request, limit) pairs and GPU lists, as JSON has them
        typed[key] = value
    options = fdef.spec.options.model_copy(update=typed)
    secrets = overrides.get("secrets") or []
    named = tuple(
        NamedSecret.model_construct(**s)  # as checked then: resolved (or refused) at start
        for s in secrets
        if isinstance(s, dict) and s.get("kind") == "named"
    )
    inline: dict[str, str] = {}
    for s in secrets:
        if isinstance(s, dict) and s.get("kind") == "inline":
            inline.update({str(k): str(v) for k, v in (s.get("values") or {}).items()})
    return dataclasses.replace(
        fdef,
        spec=fdef.spec.model_copy(update={"options": options}),
        override_env=inline or fdef.override_env,
        extra_secrets=fdef.extra_secrets + named,
    )
