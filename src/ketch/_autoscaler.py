"""`Function.update_autoscaler` (and its deprecated `keep_warm`) and
`Function.get_current_stats`: a deployed function's scaling, changed live, and its load,
through the management API."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ketch._utils.aio import Aio
from ketch._utils.options import validate_function_options
from ketch.exception import InvalidError, deprecation_warning

if TYPE_CHECKING:
    from ketch.functions import Function


@dataclass(frozen=True)
class FunctionStats:
    """A function's load now (Modal's names): inputs waiting for a container, and its
    containers (starting or running)."""

    backlog: int
    num_total_runners: int


def autoscaler_changes(label: str, settings: dict[str, Any]) -> dict[str, Any]:
    """The settings given (those left as None keep their values), checked as the decorator
    checks them; the server checks them again against the values they join."""
    given = {k: v for k, v in settings.items() if v is not None}
    validate_function_options(
        dict(given), is_generator=False, is_web=False, where=f"{label}.update_autoscaler"
    )
    return given


async def _function_id(fn: Function[..., Any], how: str) -> str:
    if fn._overrides:
        # Modal's rule too: a derived handle's pool is not the function's autoscaler.
        raise InvalidError(
            f"{fn._label}.{how}() is for the function itself, not a handle made by "
            "with_options / with_concurrency / with_batching; call it on the original handle"
        )
    if fn._method is not None:
        raise InvalidError(
            f"{fn._label}.{how}(): call it on the class's function, not on one of its methods"
        )
    return await fn._resolve()


async def update_autoscaler(fn: Function[..., Any], settings: dict[str, Any]) -> None:
    from ketch._client.client import Client
    from ketch._client.deploy import ApiClient

    changes = autoscaler_changes(fn._label, settings)
    fid = await _function_id(fn, "update_autoscaler")
    client = await Client.current()
    await ApiClient(client.config).call("POST", f"/v1/functions/{fid}/autoscaler", json=changes)


async def current_stats(fn: Function[..., Any]) -> FunctionStats:
    from ketch._client.client import Client
    from ketch._client.deploy import ApiClient

    fid = await _function_id(fn, "get_current_stats")
    client = await Client.current()
    got = await ApiClient(client.config).call("GET", f"/v1/functions/{fid}/stats")
    return FunctionStats(
        backlog=int(got["backlog"]), num_total_runners=int(got["num_total_runners"])
    )


class KeepWarm(Aio[..., None]):
    """`keep_warm`'s pair: it warns in the caller's thread (where the warning can be
    attributed to the caller's line), then runs as `update_autoscaler` does."""

    def __call__(self, *args: Any, **kwargs: Any) -> None:
        _warn_keep_warm()
        super().__call__(*args, **kwargs)

    async def aio(self, *args: Any, **kwargs: Any) -> None:
        _warn_keep_warm()
        await super().aio(*args, **kwargs)


def _warn_keep_warm() -> None:
    deprecation_warning(
        (2025, 2, 24), "keep_warm is deprecated; use update_autoscaler(min_containers=...)"
    )
