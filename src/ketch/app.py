"""`App`: the unit of deployment, and the decorators that register functions on it."""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import os
import re
import sys
import weakref
from collections.abc import Callable, Coroutine
from typing import (
    TYPE_CHECKING,
    Any,
    ParamSpec,
    Protocol,
    TypeVar,
    cast,
    dataclass_transform,
    overload,
)

from ketch._app_lookup import lookup_app
from ketch._partial import PartialFunction
from ketch._utils.aio import Aio
from ketch._utils.options import FunctionOptions, validate_function_options
from ketch.cls import Cls, parameter
from ketch.exception import InvalidError
from ketch.functions import Function

F = TypeVar("F", bound=Callable[..., Any])
P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from ketch._utils.decorator_kwargs import FunctionKwargs
    from ketch.image import Image


class FunctionDecorator(Protocol):
    """What `@app.function(...)` returns: it turns the user's function into a
    `Function` with the same parameters; an `async def`'s `.remote` returns what the
    coroutine returns."""

    @overload
    def __call__(self, f: Callable[P, Coroutine[Any, Any, R]], /) -> Function[P, R]: ...
    @overload
    def __call__(self, f: Callable[P, R], /) -> Function[P, R]: ...


_APPS: weakref.WeakSet[App] = weakref.WeakSet()


class LocalEntrypoint:
    """A function that `ketch run` calls on the user's machine while the app runs."""

    def __init__(self, raw_f: Callable[..., Any], app: App, name: str) -> None:
        self.raw_f = raw_f
        self.app = app
        self.name = name

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.raw_f(*args, **kwargs)


class App:
    """A named group of functions and classes that are deployed and run together."""

    def __init__(
        self,
        name: str | None = None,
        *,
        image: Any = None,
        secrets: list[Any] | tuple[Any, ...] = (),
        volumes: dict[str, Any] | None = None,
        include_source: bool = True,
        tags: dict[str, str] | None = None,
    ) -> None:
        if name is not None and not isinstance(name, str):
            raise InvalidError(f"App name must be a string, got {name!r}")
        from ketch.secret import Secret

        if image is not None and not hasattr(image, "spec"):
            raise InvalidError(f"image= takes a ketch Image, got {image!r}")
        for s in secrets:
            if not isinstance(s, Secret):
                raise InvalidError(f"secrets= takes Secret objects, got {s!r}")
        self._name = name
        self._image = image
        self._secrets = tuple(secrets)
        self._volumes = dict(volumes or {})
        self._include_source = include_source
        self._tags = dict(tags or {})
        self._functions: dict[str, Function[..., Any]] = {}
        self._classes: dict[str, Cls[Any]] = {}
        self._raw: dict[str, Any] = {}
        self._entrypoints: dict[str, LocalEntrypoint] = {}
        self._web_methods: dict[str, Function[..., Any]] = {}  # "<Cls>.<method>" -> endpoint handle
        self._app_id: str | None = None
        self._function_ids: dict[str, str] = {}
        _APPS.add(self)

    # -- introspection ------------------------------------------------------------------
    @property
    def name(self) -> str | None:
        return self._name

    @property
    def app_id(self) -> str | None:
        return self._app_id

    @property
    def image(self) -> Image:
        """The image of functions that name none: `App(image=...)`, else the default
        `Image.debian_slim()` (so `with app.image.imports():` works either way)."""
        from ketch.image import Image

        return self._image if self._image is not None else Image.debian_slim()

    @property
    def registered_functions(self) -> dict[str, Function[..., Any]]:
        return dict(self._functions)

    @property
    def registered_classes(self) -> dict[str, Cls[Any]]:
        return dict(self._classes)

    @property
    def registered_entrypoints(self) -> dict[str, LocalEntrypoint]:
        return dict(self._entrypoints)

    # `App.lookup(name, environment_name=, create_if_missing=)` and its `.aio` form.
    lookup = Aio(lookup_app, "lookup")

    @classmethod
    def _instances(cls) -> list[App]:
        return list(_APPS)

    def _raw_objects(self) -> dict[str, Any]:
        return self._raw

    def _handles(self) -> dict[str, Function[..., Any] | Cls[Any]]:
        return {**self._functions, **self._classes, **self._web_methods}

    def _in_container(self) -> bool:
        return os.environ.get("KETCH_APP_NAME") == self._name and "KETCH_CONTAINER_ID" in os.environ

    def _set_deployed(self, result: dict[str, Any]) -> None:
        self._app_id = result["app_id"]
        self._function_ids = dict(result["functions"])
        urls = result.get("web_urls", {})
        for tag, handle in self._handles().items():
            fn = handle._function if isinstance(handle, Cls) else handle
            fn._function_id = self._function_ids.get(tag)
            fn._web_url = urls.get(tag)

    def _check_tag(self, tag: str) -> None:
        if tag in self._raw:
            raise InvalidError(
                f"app {self._name!r} already has a function named {tag!r}; use name= to "
                "register a second one"
            )

    # -- decorators ---------------------------------------------------------------------
    def function(
        self, _warn_parentheses_missing: Any = None, **kwargs: Unpack[FunctionKwargs]
    ) -> FunctionDecorator:
        """Register a function to run in containers: `@app.function(timeout=60)`."""
        if _warn_parentheses_missing is not None:
            raise InvalidError(
                "@app.function takes keyword arguments only - did you forget parentheses? "
                "write @app.function() rather than @app.function"
            )

        def deco(f: Any) -> Any:
            flags: dict[str, Any] = {}
            if isinstance(f, PartialFunction):
                flags, f = f.flags, f.raw_f
            if isinstance(f, Function | Cls):
                raise InvalidError(f"{f!r} is already registered; apply @app.function once")
            if inspect.isclass(f):
                raise InvalidError(
                    f"@app.function cannot decorate the class {f.__name__}; use @app.cls()"
                )
            if not callable(f):
                raise InvalidError(f"@app.function decorates a function, not {f!r}")
            is_gen = inspect.isgeneratorfunction(f) or inspect.isasyncgenfunction(f)
            opts = validate_function_options(
                dict(kwargs),
                is_generator=is_gen,
                is_web=bool(flags.get("web")),
                concurrent=flags.get("concurrent"),
                batched=flags.get("batched"),
            )
            _check_global(f, opts)
            if opts.schedule is not None:
                _check_scheduled_function(f, opts)
            tag = opts.name or f.__name__
            self._check_tag(tag)
            fn: Function[..., Any] = Function(tag=tag, raw_f=f, options=opts, app=self)
            fn._web = flags.get("web")
            self._functions[tag] = fn
            self._raw[tag] = f
            return fn

        return cast("FunctionDecorator", deco)

    # To a type checker the class's `parameter()` fields become its keyword-only
    # constructor, as on a dataclass: `Model(size=1)` is checked, `Model(sise=1)` is not.
    @dataclass_transform(field_specifiers=(parameter,), kw_only_default=True)
    def cls(
        self, _warn_parentheses_missing: Any = None, **kwargs: Unpack[FunctionKwargs]
    ) -> Callable[[type[T]], Cls[T]]:
        """Register a class whose `@method()`s run in containers: `@app.cls()`."""
        if _warn_parentheses_missing is not None:
            raise InvalidError("did you forget parentheses? write @app.cls() rather than @app.cls")

        def deco(user_cls: Any) -> Cls[Any]:
            flags: dict[str, Any] = {}
            if isinstance(user_cls, PartialFunction):
                flags, user_cls = user_cls.flags, user_cls.raw_f
            if not inspect.isclass(user_cls):
                raise InvalidError(f"@app.cls decorates a class, not {user_cls!r}")
            from ketch.cls import class_batching

            opts = validate_function_options(
                dict(kwargs),
                is_generator=False,
                is_web=False,
                where="@app.cls",
                concurrent=flags.get("concurrent"),
                batched=class_batching(user_cls) or flags.get("batched"),
            )
            _check_global(user_cls, opts)
            if opts.schedule is not None:
                _check_scheduled_class(user_cls)
            tag = opts.name or user_cls.__name__
            self._check_tag(tag)
            handle: Cls[Any] = Cls(tag=tag, user_cls=user_cls, options=opts, app=self)
            self._classes[tag] = handle
            self._raw[tag] = user_cls
            from ketch.cls import class_web_methods

            for name, web in class_web_methods(user_cls).items():
                # Each web method is an endpoint of its own, served by containers of the
                # class (one pool per parameter set, parameters from the query string).
                method_tag = f"{tag}.{name}"
                endpoint: Function[..., Any] = Function(
                    tag=method_tag,
                    raw_f=None,
                    app=self,
                    options=dataclasses.replace(opts, is_web=True, retries=None, schedule=None),
                )
                endpoint._web = web
                endpoint._cls_web = (tag, name)  # type: ignore[attr-defined]
                self._web_methods[method_tag] = endpoint
                self._raw[method_tag] = user_cls
            return handle

        return deco

    def local_entrypoint(
        self, _warn_parentheses_missing: Any = None, *, name: str | None = None
    ) -> Callable[[F], F]:
        """Mark the function `ketch run` calls locally while the app runs."""
        if _warn_parentheses_missing is not None:
            raise InvalidError("did you forget parentheses? write @app.local_entrypoint()")

        def deco(f: F) -> F:
            tag = name or f.__name__
            if tag in self._entrypoints:
                raise InvalidError(f"duplicate local entrypoint {tag!r}")
            self._entrypoints[tag] = LocalEntrypoint(f, self, tag)
            return f

        return deco

    def include(self, other: App) -> App:
        for tag in other._raw:
            self._check_tag(tag)
        self._functions.update(other._functions)
        self._classes.update(other._classes)
        self._raw.update(other._raw)
        return self

    # -- running ------------------------------------------------------------------------
    def run(
        self,
        *,
        detach: bool = False,
        environment_name: str | None = None,
        show_logs: bool = True,
    ) -> RunContext:
        """Run the app ephemerally for the duration of a `with` (or `async with`) block."""
        return RunContext(self, environment_name, show_logs)

    def deploy(self, *, name: str | None = None, environment_name: str | None = None) -> App:
        """Deploy the app persistently; returns the app, now bound to its deployment."""
        return Aio(self._deploy)(name=name, environment_name=environment_name)

    async def _deploy(
        self,
        *,
        name: str | None = None,
        environment_name: str | None = None,
        log: Callable[[str], None] | None = None,
    ) -> App:
        from ketch._app_spec import deploy_app
        from ketch._output import deploy_log
        from ketch.config import Config

        cfg = Config.load()
        app_name = name or self._name
        if not app_name:
            raise InvalidError("a deployed app needs a name: App('name') or deploy(name=...)")
        await deploy_app(
            self,
            name=app_name,
            environment=environment_name or cfg.environment,
            ephemeral=False,
            log=log or deploy_log() or _quiet,
            config=cfg,
        )
        return self


def _quiet(line: str) -> None:
    pass


def _check_global(f: Any, opts: FunctionOptions) -> None:
    qualname = getattr(f, "__qualname__", "")
    if "<locals>" in qualname and not opts.serialized:
        raise InvalidError(
            f"{qualname} is defined inside another function, so a container cannot import "
            "it; move it to module level or pass serialized=True"
        )


def print_log(entry: dict[str, Any]) -> None:
    """Show a container's output line, tagged with its function and container."""
    stream = sys.stderr if entry.get("stream") == "stderr" else sys.stdout
    print(f"[{entry['function']} {entry['container']}] {entry['line']}", file=stream, flush=True)


class RunContext:
    def __init__(
        self,
        app: App,
        environment: str | None,
        show_logs: bool,
        name_hint: str | None = None,
        *,
        name: str | None = None,
        detach: bool = False,
        log: Callable[[str], None] | None = None,
    ) -> None:
        self.app = app
        self._log = log  # the deploy's log lines (image builds); none by default
        self.environment = environment
        self.show_logs = show_logs
        self.name_hint = name_hint
        self.name = name  # `--name`: wins over the App's own name
        # `ketch run --detach`: the app is not tied to this connection and outlives it.
        self.detach = detach

    def _ephemeral_name(self) -> str:
        """An unnamed App runs under the name of its file: given by `ketch run`, else the
        module that defines its functions, else the script being run."""
        if self.name:
            return self.name
        if self.app._name:
            return self.app._name
        candidates = [self.name_hint]
        candidates += [getattr(obj, "__module__", None) for obj in self.app._raw.values()]
        main = sys.modules.get("__main__")
        candidates.append(os.path.basename(getattr(main, "__file__", "") or ""))
        for cand in candidates:
            if not cand or cand == "__main__":
                continue
            stem = cand.rpartition(".")[2] if not cand.endswith(".py") else cand[:-3]
            slug = re.sub(r"[^a-zA-Z0-9._-]+", "-", stem).strip("._-")[:64]
            if slug:
                return slug
        return "app"

    async def _start(self, log: Callable[[str], None] | None = None) -> App:
        from ketch._app_spec import deploy_app
        from ketch._client.client import Client
        from ketch._output import deploy_log

        client = await Client.current()
        result = await deploy_app(
            self.app,
            name=self._ephemeral_name(),
            environment=self.environment or client.config.environment,
            ephemeral=True,
            log=log or deploy_log() or _quiet,
            config=client.config,
        )
        if not self.detach:
            client.lease(result["app_id"])
        if self.show_logs:
            client.subscribe_logs(result["app_id"], print_log)
        return self.app

    async def _stop(self) -> None:
        from ketch._client.client import Client
        from ketch._client.deploy import ApiClient

        app_id = self.app._app_id
        if app_id is None:
            return
        client = await Client.current()
        client.release(app_id)
        if self.detach:
            return  # left running until `ketch app stop`
        with contextlib.suppress(Exception):
            await ApiClient(client.config).call("POST", f"/v1/apps/{app_id}/stop")
        self.app._app_id = None

    def __enter__(self) -> App:
        return Aio(self._start)(self._log)

    def __exit__(self, *exc: Any) -> None:
        Aio(self._stop)()

    async def __aenter__(self) -> App:
        return await Aio(self._start).aio(self._log)

    async def __aexit__(self, *exc: Any) -> None:
        await Aio(self._stop).aio()


def _check_scheduled_function(f: Any, opts: Any) -> None:
    """A scheduled function is called with no arguments, as a spawned call."""
    if opts.is_web:
        raise InvalidError(
            f"{f.__qualname__} is a web endpoint and cannot have a schedule; schedule a plain "
            "function that sends it a request instead"
        )
    try:
        inspect.signature(f).bind()
    except TypeError:
        raise InvalidError(
            f"{f.__qualname__} has a schedule, so it is called with no arguments; give its "
            "parameters defaults"
        ) from None
    except ValueError:
        pass  # no signature to read (a builtin): the call in the container will tell


def _check_scheduled_class(user_cls: type) -> None:
    """A scheduled class runs its one `@method()`, on an instance with default parameters."""
    from ketch.cls import _EMPTY, class_methods, declared_parameters

    methods = sorted(class_methods(user_cls))
    if len(methods) != 1:
        raise InvalidError(
            f"@app.cls(schedule=...) runs the class's one @method(); {user_cls.__name__} has "
            f"{len(methods)} ({', '.join(methods) or 'none'}); put the schedule on an "
            "@app.function that calls the method you want"
        )
    required = [n for n, d in declared_parameters(user_cls).items() if d is _EMPTY]
    if required:
        raise InvalidError(
            f"{user_cls.__name__} has a schedule, so it is built with no arguments; give "
            f"its parameters defaults: {', '.join(sorted(required))}"
        )
