"""Classes as functions: `@app.cls`, `parameter()`, `@enter`, `@exit` and `@method`."""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable, Coroutine
from typing import (
    TYPE_CHECKING,
    Any,
    Concatenate,
    Generic,
    ParamSpec,
    Protocol,
    Self,
    TypeVar,
    cast,
    overload,
)

from ketch._handle_options import PerHandleOptions
from ketch._utils.aio import Aio, aio_method
from ketch._utils.options import FunctionOptions
from ketch._utils.payload import encode_params
from ketch.exception import InvalidError
from ketch.functions import Function

if TYPE_CHECKING:
    from ketch.app import App

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")

_EMPTY = inspect.Parameter.empty
_PARAM_TYPES = (str, int, bool, bytes)


class _Parameter:
    def __init__(self, default: Any, init: bool) -> None:
        self.default = default
        self.init = init

    def __repr__(self) -> str:
        return f"parameter(default={self.default!r})"


def parameter(*, default: Any = _EMPTY, init: bool = True) -> Any:
    """Declare a class field that callers set per instance: `x: int = ketch.parameter()`."""
    if default is not _EMPTY and not isinstance(default, _PARAM_TYPES):
        raise InvalidError(
            f"parameter default {default!r} has type {type(default).__name__}; "
            "parameters may be str, int, bool or bytes"
        )
    return _Parameter(default, init)


def declared_parameters(user_cls: type) -> dict[str, Any]:
    """Parameter names of a class with their defaults (`inspect.Parameter.empty` if none)."""
    out: dict[str, Any] = {}
    for klass in reversed(user_cls.__mro__):
        for name, value in vars(klass).items():
            if isinstance(value, _Parameter):
                out[name] = value.default
    return out


_TYPE_NAMES = {t.__name__: t for t in _PARAM_TYPES}


def _parameter_types(user_cls: type) -> dict[str, Any]:
    hints: dict[str, Any] = {}
    for klass in reversed(user_cls.__mro__):
        hints.update(getattr(klass, "__annotations__", {}))
    # Under `from __future__ import annotations` the hints are strings; the four parameter
    # types are builtins, so their names are enough to check values against.
    return {
        name: _TYPE_NAMES.get(hint, hint) if isinstance(hint, str) else hint
        for name, hint in hints.items()
    }


def _mark(marker: str, info: dict[str, Any], what: str) -> Callable[[Any], Any]:
    def deco(f: Any) -> Any:
        if not callable(f):
            raise InvalidError(f"@{what} decorates a method, not {f!r}")
        setattr(f, marker, info)
        return f

    return deco


def enter(_warn_parentheses_missing: Any = None, *, snap: bool = False) -> Callable[[Any], Any]:
    """Run this method once when a container of the class starts (before any input)."""
    if _warn_parentheses_missing is not None:
        raise InvalidError("did you forget parentheses? write @enter()")
    return _mark("_ketch_enter", {"snap": snap}, "enter")


def exit(_warn_parentheses_missing: Any = None) -> Callable[[Any], Any]:
    """Run this method when a container of the class shuts down."""
    if _warn_parentheses_missing is not None:
        raise InvalidError("did you forget parentheses? write @exit()")
    return _mark("_ketch_exit", {}, "exit")


class MethodHandle(Protocol[P, R]):
    """What a type checker sees of an `@method()` on an instance of an `@app.cls` class:
    a `Function` with the method's parameters (less `self`) and return type. At run time
    the method stays the plain function; `Cls` instances build the handle."""

    def __get__(self, obj: Any, owner: Any = None) -> Function[P, R]: ...


class MethodDecorator(Protocol):
    @overload
    def __call__(
        self, f: Callable[Concatenate[Any, P], Coroutine[Any, Any, R]], /
    ) -> MethodHandle[P, R]: ...
    @overload
    def __call__(self, f: Callable[Concatenate[Any, P], R], /) -> MethodHandle[P, R]: ...


def method(
    _warn_parentheses_missing: Any = None, *, is_generator: bool | None = None
) -> MethodDecorator:
    """Expose this method for remote calls: `Model().predict.remote(...)`."""
    if _warn_parentheses_missing is not None:
        raise InvalidError("did you forget parentheses? write @method()")
    return cast("MethodDecorator", _mark("_ketch_method", {"is_generator": is_generator}, "method"))


def class_methods(user_cls: type) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for klass in reversed(user_cls.__mro__):
        for name, value in vars(klass).items():
            info = getattr(value, "_ketch_method", None)
            if info is None and _batched_flags(value) is not None:
                info = {"is_generator": False}  # a @batched method is a method too
            if info is not None:
                gen = info.get("is_generator")
                if gen is None:
                    gen = inspect.isgeneratorfunction(value) or inspect.isasyncgenfunction(value)
                out[name] = {"is_generator": bool(gen)}
    return out


def _batched_flags(value: Any) -> tuple[int, int] | None:
    from ketch._partial import PartialFunction

    if isinstance(value, PartialFunction):
        flags: tuple[int, int] | None = value.flags.get("batched")
        return flags
    return None


def class_batching(user_cls: type) -> tuple[int, int] | None:
    """The (max_batch_size, wait_ms) of the class's @batched method, if it has one. Batches
    are formed per container pool, so such a class has that one method and no other."""
    found = {
        name: flags
        for klass in reversed(user_cls.__mro__)
        for name, value in vars(klass).items()
        if (flags := _batched_flags(value)) is not None
    }
    if not found:
        return None
    others = sorted(set(class_methods(user_cls)) - set(found))
    if len(found) > 1 or others:
        raise InvalidError(
            f"{user_cls.__name__}: a class with a @batched method can have no other "
            f"@method() or @batched method (found: {', '.join(sorted(found) + others)}); "
            "put the other methods on a class of their own"
        )
    return next(iter(found.values()))


def class_web_methods(user_cls: type) -> dict[str, dict[str, Any]]:
    """Methods carrying a web decorator, with its settings: each becomes an endpoint."""
    from ketch._partial import PartialFunction

    out: dict[str, dict[str, Any]] = {}
    for klass in reversed(user_cls.__mro__):
        for name, value in vars(klass).items():
            if isinstance(value, PartialFunction) and value.flags.get("web"):
                out[name] = value.flags["web"]
    return out


def parameter_types(user_cls: type) -> dict[str, str]:
    """Declared parameters and their type names, for parameters read from a URL."""
    hints = _parameter_types(user_cls)
    out = {}
    for name in declared_parameters(user_cls):
        hint = hints.get(name, "str")
        out[name] = hint if isinstance(hint, str) else getattr(hint, "__name__", "str")
    return out


def instantiate(cls: Any, params: dict[str, Any]) -> Any:
    """An instance of the user's class with its parameters set, as a container makes it
    (and `.local()` on a method, here)."""
    obj = cls.__new__(cls)
    for name, default in declared_parameters(cls).items():
        if name in params:
            setattr(obj, name, params[name])
        elif default is not inspect.Parameter.empty:
            setattr(obj, name, default)
    init = cls.__dict__.get("__init__")
    if init is not None:
        init(obj)
    return obj


def lifecycle_hooks(
    instance: Any, marker: str, snap: bool | None = None
) -> list[Callable[[], Any]]:
    """The `@enter` (marker `_ketch_enter`) or `@exit` hooks of an instance, bound, in
    definition order, snap=True ones first; only those with that `snap` when given."""
    found = []
    for klass in reversed(type(instance).__mro__):
        for name, value in vars(klass).items():
            info = getattr(value, marker, None)
            if info is not None and (snap is None or bool(info.get("snap")) == snap):
                found.append((0 if info.get("snap") else 1, name))
    seen: set[str] = set()
    hooks = []
    for _, name in sorted(found, key=lambda x: x[0]):
        if name not in seen:
            seen.add(name)
            hooks.append(getattr(instance, name))
    return hooks


class Cls(PerHandleOptions, Generic[T]):
    """A handle on a class registered with `@app.cls`; call it to bind parameters.

    To a type checker, calling it gives an instance of the user's class `T`, whose
    `@method()`s are `Function` handles (`MethodHandle`); at run time it gives an `Obj`."""

    def __init__(
        self,
        *,
        tag: str,
        user_cls: type | None,
        options: FunctionOptions,
        app: App | None,
        lookup: tuple[str, str, str | None] | None = None,
    ) -> None:
        self._tag = tag
        self._user_cls = user_cls
        self._options = options
        self._app = app
        self._lookup = lookup
        self._methods = class_methods(user_cls) if user_cls is not None else {}
        self._params = declared_parameters(user_cls) if user_cls is not None else {}
        self._types = _parameter_types(user_cls) if user_cls is not None else {}
        self._function: Function[..., Any] = Function(
            tag=tag, raw_f=None, options=options, app=app, lookup=lookup
        )
        self._overrides: dict[str, Any] | None = {}

    @property
    def tag(self) -> str:
        return self._tag

    # -- per-handle options (A6): each distinct set of overrides is a container pool -----
    def _derive(self, overrides: dict[str, Any]) -> Self:
        twin = type(self)(
            tag=self._tag,
            user_cls=self._user_cls,
            options=self._options,
            app=self._app,
            lookup=self._lookup,
        )
        twin._methods = self._methods
        twin._overrides = {**(self._overrides or {}), **overrides}
        return twin

    def __repr__(self) -> str:
        return f"Cls({self._tag!r})"

    def __call__(self, *args: Any, **kwargs: Any) -> T:
        if args:
            raise InvalidError(f"{self._tag}(...) takes its parameters by keyword only")
        if self._user_cls is not None:
            unknown = set(kwargs) - set(self._params)
            if unknown:
                raise InvalidError(
                    f"{self._tag} has no parameter {', '.join(sorted(unknown))}; declare it "
                    "as a class field: `name: str = ketch.parameter()`"
                )
            missing = [n for n, d in self._params.items() if d is _EMPTY and n not in kwargs]
            if missing:
                raise InvalidError(f"{self._tag} needs a value for {', '.join(missing)}")
            for name, value in kwargs.items():
                want = self._types.get(name)
                if (
                    isinstance(want, type)
                    and want in _PARAM_TYPES
                    and (type(value) is not want and not (want is int and type(value) is bool))
                ):
                    raise InvalidError(
                        f"{self._tag}.{name} is declared {want.__name__}, got "
                        f"{type(value).__name__} {value!r}"
                    )
                if not isinstance(value, _PARAM_TYPES):
                    raise InvalidError(
                        f"parameter {name}={value!r}: parameters may be str, int, bool or bytes"
                    )
        return cast("T", Obj(self, kwargs))

    @staticmethod
    def from_name(app_name: str, name: str, *, environment_name: str | None = None) -> Cls[Any]:
        """A lazy handle on a deployed class; resolved on first use."""
        return cls_from_name(app_name, name, environment_name=environment_name)

    async def _hydrate(self) -> Cls[T]:
        await self._function._hydrate()
        info = self._function._info
        if info:
            self._methods = info.get("methods", {})
        return self

    def hydrate(self) -> Cls[T]:
        return Aio(self._hydrate)()

    async def _flash_urls(self) -> list[str]:
        from ketch.experimental import flash_urls

        return await flash_urls(self)

    # Modal's name for the URL of an `@experimental.http_server` class.
    _experimental_get_flash_urls = aio_method(_flash_urls)


class Obj:
    """An instance of a registered class with its parameters bound."""

    def __init__(self, cls: Cls[Any], params: dict[str, Any]) -> None:
        self._cls = cls
        self._params = params
        self._blob = encode_params(params)
        self._local: Any = None

    async def _update_autoscaler(
        self,
        *,
        min_containers: int | None = None,
        max_containers: int | None = None,
        buffer_containers: int | None = None,
        scaledown_window: int | None = None,
    ) -> None:
        """The class's scaling, changed live as `Function.update_autoscaler` changes a
        function's. Every parameter set shares the class's settings; min_containers keeps
        containers of the parameterless instance warm."""
        if self._cls._overrides:
            raise InvalidError(
                f"{self._cls.tag}: update_autoscaler is for the class itself, not a handle "
                "made by with_options / with_concurrency / with_batching"
            )
        await self._cls._function.update_autoscaler.aio(
            min_containers=min_containers,
            max_containers=max_containers,
            buffer_containers=buffer_containers,
            scaledown_window=scaledown_window,
        )

    update_autoscaler = aio_method(_update_autoscaler)

    def _local_instance(self) -> Any:
        if self._local is None:
            user_cls = self._cls._user_cls
            if user_cls is None:
                raise InvalidError(f"{self._cls.tag} was looked up by name; its code is not here")
            obj = instantiate(user_cls, self._params)
            for hook in lifecycle_hooks(obj, "_ketch_enter"):
                hook()
            self._local = obj
        return self._local

    def __getattr__(self, name: str) -> Function[..., Any]:
        if name.startswith("_"):
            raise AttributeError(name)
        cls = self._cls
        base = cls._function
        # A looked-up class knows its methods once its handle has been resolved.
        methods = cls._methods or base._info.get("methods") or {}
        web = cls._app._web_methods.get(f"{cls.tag}.{name}") if cls._app is not None else None
        if web is not None:
            return web  # a web endpoint: reached over HTTP (its .remote() says so)
        # A looked-up class's web methods: the server lists them apart from its methods.
        web_methods: dict[str, str | None] = base._info.get("web_methods") or {}
        known = name in methods or name in web_methods
        if (cls._user_cls is not None or base._info) and not known:
            raise AttributeError(f"{cls.tag} has no @method() named {name!r}")
        info = methods.get(name, {})
        if cls._app is not None and base._function_id is None:
            base._function_id = cls._app._function_ids.get(cls.tag)
        fn = base._bind(name, self._blob, lambda: getattr(self._local_instance(), name))
        fn._overrides = cls._overrides or None
        fn._options = dataclasses.replace(
            base._options, is_generator=bool(info.get("is_generator"))
        )
        if name in web_methods:
            fn._web_url = web_methods[name]
            fn._options = dataclasses.replace(fn._options, is_web=True)
        return fn


def cls_from_name(app_name: str, name: str, *, environment_name: str | None = None) -> Cls[Any]:
    if not isinstance(app_name, str) or not isinstance(name, str):
        raise InvalidError("Cls.from_name(app_name, name) takes two strings")
    return Cls(
        tag=name,
        user_cls=None,
        options=FunctionOptions(),
        app=None,
        lookup=(app_name, name, environment_name),
    )
