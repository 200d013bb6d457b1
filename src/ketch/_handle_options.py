"""Per-handle options (A6), shared by `Function` and `Cls`: `with_options`,
`with_concurrency` and `with_batching` give a handle whose calls run in a container pool
of their own, with the overridden settings; the handle they are called on is unchanged."""

from __future__ import annotations

import abc
import dataclasses
from typing import Any, Self

from ketch._utils.options import (
    FunctionOptions,
    validate_batched,
    validate_concurrent,
    validate_function_options,
)
from ketch.exception import InvalidError


class PerHandleOptions(abc.ABC):
    """Mixed into handle classes, which give `_derive`: a twin with more overrides."""

    _tag: str
    _options: FunctionOptions
    _overrides: dict[str, Any] | None

    @property
    def _label(self) -> str:
        return self._tag

    @abc.abstractmethod
    def _derive(self, overrides: dict[str, Any]) -> Self:
        """A twin of this handle with `overrides` on top of its own."""

    def _overridden(self, key: str) -> Any:
        return (self._overrides or {}).get(key, getattr(self._options, key))

    def _check_derivable(self, how: str) -> None:
        if self._options.is_web:
            raise InvalidError(
                f"{self._label} is a web endpoint: its requests come through the gateway, "
                f"not through this handle, so .{how}() would change nothing"
            )

    def with_options(
        self,
        *,
        cpu: float | tuple[float, float] | None = None,
        memory: int | tuple[int, int] | None = None,
        gpu: str | list[str] | None = None,
        secrets: list[Any] | None = None,
        timeout: int | None = None,
        startup_timeout: int | None = None,
        retries: Any = None,
        min_containers: int | None = None,
        max_containers: int | None = None,
        buffer_containers: int | None = None,
        scaledown_window: int | None = None,
    ) -> Self:
        """This handle with other resources, limits or scaling; its calls run in
        containers of their own (one pool per distinct set of options)."""
        self._check_derivable("with_options")
        given = {
            k: v
            for k, v in {
                "cpu": cpu,
                "memory": memory,
                "gpu": gpu,
                "secrets": secrets,
                "timeout": timeout,
                "startup_timeout": startup_timeout,
                "retries": retries,
                "min_containers": min_containers,
                "max_containers": max_containers,
                "buffer_containers": buffer_containers,
                "scaledown_window": scaledown_window,
            }.items()
            if v is not None
        }
        where = f"{self._label}.with_options"
        opts = validate_function_options(dict(given), is_generator=False, is_web=False, where=where)
        low = given.get("min_containers", self._overridden("min_containers"))
        high = given.get("max_containers", self._overridden("max_containers"))
        if high is not None and low > high:
            raise InvalidError(
                f"{where}: max_containers ({high}) must be at least min_containers ({low})"
            )
        out: dict[str, Any] = {}
        for key in given:
            value = getattr(opts, key)
            if key == "retries":
                value = dataclasses.asdict(value)
            elif key == "secrets":
                value = [s.spec() for s in value]
            out[key] = value
        return self._derive(out)

    def with_concurrency(self, *, max_inputs: int, target_inputs: int | None = None) -> Self:
        """This handle with containers that take up to `max_inputs` inputs at once."""
        self._check_derivable("with_concurrency")
        n, target = validate_concurrent(max_inputs, target_inputs)
        if self._overridden("batch_max_size"):
            raise InvalidError(
                f"{self._label} is @batched: it cannot also take concurrent "
                "inputs (use with_batching to change its batches)"
            )
        return self._derive({"max_inputs": n, "target_inputs": target})

    def with_batching(self, *, max_batch_size: int, wait_ms: int) -> Self:
        """This handle with its inputs grouped into lists of up to `max_batch_size`."""
        self._check_derivable("with_batching")
        size, wait = validate_batched(max_batch_size, wait_ms)
        if self._options.is_generator:
            raise InvalidError(f"{self._label} is a generator function: it cannot be batched")
        if int(self._overridden("max_inputs") or 1) > 1:
            raise InvalidError(f"{self._label} takes concurrent inputs: it cannot also be batched")
        return self._derive({"batch_max_size": size, "batch_wait_ms": wait})
