"""Finding the user's function or class inside a container, from the spec the server sent."""

from __future__ import annotations

import base64
import importlib
import sys
import types
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import cloudpickle

from ketch._utils.protocol.container import ContainerFunction
from ketch.cls import instantiate, lifecycle_hooks


class Target:
    """What a container runs: a plain function, or an instance of a user class."""

    def __init__(
        self, spec: ContainerFunction, params: bytes | None, *, instantiate: bool = True
    ) -> None:
        self.spec = spec
        self.module: types.ModuleType | None = None
        self.instance: Any = None
        if spec.serialized:
            obj = cloudpickle.loads(base64.b64decode(spec.serialized))
        else:
            assert spec.module is not None  # the deploy endpoint requires one or the other
            self.module = importlib.import_module(spec.module)
            obj = _find(self.module, spec.tag)
        self.obj = obj
        if instantiate:
            self.instantiate(params)

    def instantiate(self, params: bytes | None) -> None:
        """Create the instance a class's methods run on (nothing to do for a function)."""
        if self.spec.kind == "cls" and self.instance is None:
            from ketch._utils.payload import decode_params

            self.instance = instantiate(self.obj, decode_params(params))

    def enter(self, *, snap: bool | None = None) -> list[Callable[[], Any]]:
        """The @enter hooks of a class, in definition order (snap=True ones first); only
        those with that `snap` flag when it is given."""
        if self.instance is None:
            return []
        return lifecycle_hooks(self.instance, "_ketch_enter", snap)

    def exit_hooks(self) -> list[Callable[[], Any]]:
        return lifecycle_hooks(self.instance, "_ketch_exit") if self.instance is not None else []

    def resolve(self, method: str | None) -> Callable[..., Any]:
        if self.instance is None:
            fn: Callable[..., Any] = self.obj
            return fn
        if not method:
            raise AttributeError("a class call needs a method name")
        bound: Callable[..., Any] = getattr(self.instance, method)
        return bound


def _find(module: types.ModuleType, tag: str) -> Any:
    from ketch.app import App

    for app in App._instances():
        raw = app._raw_objects().get(tag)
        if raw is not None:
            return raw
    # A function defined on an app that lives in another module of the same package.
    for value in list(vars(module).values()):
        if isinstance(value, App) and tag in value._raw_objects():
            return value._raw_objects()[tag]
    raise LookupError(f"{module.__name__} defines no function {tag!r} on a ketch App")


@dataclass
class Preloaded:
    """What a fork-server template loaded before forking a container (see
    _runtime/template.py): the target, and whether its `@enter(snap=True)` hooks ran."""

    target: Target
    params: bytes | None
    snapped: bool

    def serves(self, spec: ContainerFunction, params: bytes | None) -> bool:
        """Whether the container the server describes runs this very code (else it
        loads its own, as a plain start would)."""
        same = self.target.spec.same_code(spec)
        return same and (not self.snapped or params == self.params)


def add_sys_path(entries: list[str]) -> None:
    for entry in reversed(entries):
        if entry not in sys.path:
            sys.path.insert(0, entry)
