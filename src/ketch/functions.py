"""Function handles (`.remote`, `.map`, `.spawn`, ...) and `FunctionCall`."""

from __future__ import annotations

import asyncio
import collections
import os
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any, Generic, ParamSpec, Self, TypeVar

from ketch._autoscaler import FunctionStats, KeepWarm, current_stats, update_autoscaler
from ketch._client.client import Client
from ketch._function_call import FunctionCall
from ketch._handle_options import PerHandleOptions
from ketch._map import (
    InputsAio,
    MapAio,
    Raise,
    next_input,
    outcome,
    star_inputs,
    zip_inputs,
)
from ketch._utils import payload
from ketch._utils.aio import (
    Aio,
    AioIter,
    aio_iter_method,
    aio_method,
)
from ketch._utils.ids import new_id, stable_id
from ketch._utils.options import FunctionOptions
from ketch._utils.protocol import messages as m
from ketch._utils.tracecontext import current_traceparent
from ketch.exception import ExecutionError, InvalidError, NotFoundError

if TYPE_CHECKING:
    from ketch.app import App

P = ParamSpec("P")
R = TypeVar("R")

__all__ = ["Function", "FunctionCall"]

# How many `.map` inputs may be in flight (sent, result not yet consumed) at once: this is
# what keeps a map over a huge generator in bounded memory.
MAP_WINDOW = 1000

# Inside a container: the web URLs of the app's endpoints, set by the runtime at start.
CONTAINER_WEB_URLS: dict[str, str] = {}
# How many `.spawn_map` spawns may wait for the server's acknowledgement at once.
SPAWN_WINDOW = 64


def _in_app_container(app: App) -> bool:
    """Whether this process is a container of `app`; an unnamed App runs under a name
    the server gave it, so inside a container it is the container's own app."""
    if "KETCH_CONTAINER_ID" not in os.environ:
        return False
    return app._in_container() or app.name is None


class _RemoteAio(Aio[..., Any]):
    """`.remote()`: a handle that knows its function, on a connected client, calls from
    the caller's thread (`Client.call_blocking`), without a hand-off to the SDK loop."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        handle: Function[..., Any] = getattr(self._afn, "__self__")  # noqa: B009
        fid = handle._function_id
        client = Client._current
        if fid is not None and client is not None and client.ready_for_blocking():
            handle._refuse("remote")
            return client.call_blocking(fid, handle._request(args, kwargs))
        return super().__call__(*args, **kwargs)


class Function(PerHandleOptions, Generic[P, R]):
    """A handle on a ketch function: call it remotely, locally, in bulk, or in background."""

    def __init__(
        self,
        *,
        tag: str,
        raw_f: Callable[..., Any] | None,
        options: FunctionOptions,
        app: App | None,
        method: str | None = None,
        params: bytes | None = None,
        local_target: Callable[[], Callable[..., Any]] | None = None,
        lookup: tuple[str, str, str | None] | None = None,
    ) -> None:
        self._tag = tag
        self._raw_f = raw_f
        self._options = options
        self._app = app
        self._method = method
        self._params = params
        self._local_target = local_target
        self._lookup = lookup
        self._parent: Function[..., Any] | None = None
        self._function_id: str | None = None
        self._info: dict[str, Any] = {}
        self._web_url: str | None = None
        self._web: dict[str, Any] | None = None  # the web decorator's settings, if any
        # Options a class handle overrides (Cls.with_options): its calls get a pool of their own.
        self._overrides: dict[str, Any] | None = None
        self.__doc__ = getattr(raw_f, "__doc__", None)

    # -- identity -----------------------------------------------------------------------
    @property
    def tag(self) -> str:
        return self._tag

    @property
    def _label(self) -> str:
        """How messages name this handle: `f`, or `Cls.method` for a bound method."""
        return f"{self._tag}.{self._method}" if self._method else self._tag

    @property
    def object_id(self) -> str | None:
        return self._function_id

    @property
    def is_generator(self) -> bool:
        return self._options.is_generator

    def get_raw_f(self) -> Callable[..., Any]:
        if self._raw_f is None:
            raise InvalidError(f"{self._label} was looked up by name; its code is not here")
        return self._raw_f

    def get_web_url(self) -> str | None:
        """The endpoint's URL (web functions only); also works inside the container."""
        if self._web_url is None and self._app is not None and _in_app_container(self._app):
            return CONTAINER_WEB_URLS.get(self._tag)
        if self._web_url is None and self._lookup is not None and self._function_id is None:
            self.hydrate()  # a handle from from_name learns its URL on first use
        return self._web_url

    async def _hydrate(self) -> Function[..., Any]:
        """Resolve a looked-up handle against the server (NotFoundError if it is not there)."""
        if self._lookup is None or self._function_id is not None:
            return self
        if self._parent is not None:
            # A method of a looked-up class: one lookup for the class serves every method.
            await self._parent._hydrate()
            info = self._parent._info
        else:
            app_name, tag, env = self._lookup
            client = await Client.current()
            reply = await client.request(
                {
                    "t": m.LOOKUP,
                    "app": app_name,
                    "name": tag,
                    "environment": env or client.config.environment,
                }
            )
            info = reply["info"]
        is_generator = bool(info["is_generator"])
        web_url = info.get("web_url")
        web_methods: dict[str, str | None] = info.get("web_methods") or {}
        if self._method is not None and self._method in web_methods:
            # A web method of the class: found as plain methods are, reached over HTTP.
            is_generator, web_url = False, web_methods[self._method]
        elif self._method is not None:
            methods: dict[str, Any] = info.get("methods") or {}
            if self._method not in methods:
                raise NotFoundError(
                    f"class {self._tag!r} of app {self._lookup[0]!r} has no @method() named "
                    f"{self._method!r} (it has: {', '.join(sorted(methods)) or 'none'})"
                )
            is_generator = bool(methods[self._method].get("is_generator"))
        self._web_url = web_url
        self._options = FunctionOptions(is_generator=is_generator, is_web=bool(web_url))
        self._info = info
        self._function_id = info["function_id"]
        return self

    def hydrate(self) -> Function[..., Any]:
        """Resolve now rather than on first use."""
        return Aio(self._hydrate)()

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise InvalidError(
            f"{self._label} is a ketch Function and cannot be called directly: use "
            f"{self._label}.remote(...) to run it in a container, or {self._label}.local(...) "
            "to run it here"
        )

    def __repr__(self) -> str:
        return f"Function({self._label!r})"

    def _bind(
        self,
        method: str,
        params: bytes | None,
        local_target: Callable[[], Callable[..., Any]] | None,
    ) -> Function[..., Any]:
        twin: Function[..., Any] = Function(
            tag=self._tag,
            raw_f=self._raw_f,
            options=self._options,
            app=self._app,
            method=method,
            params=params,
            local_target=local_target,
            lookup=self._lookup,
        )
        twin._function_id = self._function_id
        twin._parent = self
        return twin

    # -- per-handle options (A6) and the live autoscaler ---------------------------------
    def _derive(self, overrides: dict[str, Any]) -> Self:
        twin = type(self)(
            tag=self._tag,
            raw_f=self._raw_f,
            options=self._options,
            app=self._app,
            method=self._method,
            params=self._params,
            local_target=self._local_target,
            lookup=self._lookup,
        )
        for attr in ("_parent", "_function_id", "_info", "_web_url", "_web"):
            setattr(twin, attr, getattr(self, attr))
        twin._overrides = {**(self._overrides or {}), **overrides}
        return twin

    async def _update_autoscaler(
        self,
        *,
        min_containers: int | None = None,
        max_containers: int | None = None,
        buffer_containers: int | None = None,
        scaledown_window: int | None = None,
    ) -> None:
        """Change the running function's scaling now, without a redeploy (raising
        min_containers starts containers at once). Settings left out keep their values; a
        server restart keeps these; the app's next deploy resets them to the decorator's."""
        settings = {
            "min_containers": min_containers,
            "max_containers": max_containers,
            "buffer_containers": buffer_containers,
            "scaledown_window": scaledown_window,
        }
        await update_autoscaler(self, settings)

    async def _keep_warm(self, warm_pool_size: int) -> None:
        """Deprecated: `update_autoscaler(min_containers=warm_pool_size)`."""
        await update_autoscaler(self, {"min_containers": warm_pool_size})

    async def _get_current_stats(self) -> FunctionStats:
        """The function's load now: `backlog` (inputs waiting) and `num_total_runners`."""
        return await current_stats(self)

    update_autoscaler = aio_method(_update_autoscaler)
    keep_warm = aio_method(_keep_warm, via=KeepWarm)
    get_current_stats = aio_method(_get_current_stats)

    async def _resolve(self) -> str:
        if self._function_id is not None:
            return self._function_id
        if self._lookup is not None:
            await self._hydrate()
            assert self._function_id is not None
            return self._function_id
        app_id = os.environ.get("KETCH_APP_ID")
        if app_id and self._app is not None and self._app._in_container():
            # Inside a container of the same app: ids are derived, no lookup needed.
            self._function_id = stable_id("fu", app_id, self._tag)
            return self._function_id
        if self._app is not None and self._app._app_id is not None:
            fid = self._app._function_ids.get(self._tag)
            if fid is not None:
                self._function_id = fid
                return fid
        raise ExecutionError(
            f"{self._label} is not running anywhere: run it under `ketch run`, inside "
            "`with app.run():`, or deploy the app and use Function.from_name"
        )

    def _request(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        req: dict[str, Any] = {
            "args": payload.dumps((args, kwargs)),
            "method": self._method,
            "params": self._params,
        }
        if self._overrides:
            req["options"] = self._overrides
        traceparent = current_traceparent()
        if traceparent is not None:
            req["traceparent"] = traceparent  # the caller's trace goes on in the call (O5)
        return req

    def _refuse(self, how: str, *, generator_ok: bool = False) -> None:
        if self._options.is_web:
            raise InvalidError(
                f"{self._label} is a web endpoint and cannot be called with .{how}(); send it an "
                f"HTTP request instead (its URL: {self._web_url or 'see get_web_url()'})"
            )
        if self._options.is_generator and not generator_ok:
            raise InvalidError(
                f"{self._label} is a generator function: call it with .remote_gen(), not .{how}()"
            )

    # -- calls --------------------------------------------------------------------------
    def local(self, *args: P.args, **kwargs: P.kwargs) -> R:
        """Run the function in this process."""
        target = self._local_target() if self._local_target else self.get_raw_f()
        result: R = target(*args, **kwargs)
        return result

    async def _remote(self, *args: Any, **kwargs: Any) -> Any:
        fid = await self._resolve()
        self._refuse("remote")
        client = await Client.current()
        return await client.call(fid, self._request(args, kwargs))

    async def _remote_gen(self, *args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        await self._resolve()
        if self._options.is_web:
            self._refuse("remote_gen")
        if not self._options.is_generator:
            raise InvalidError(f"{self._label} is not a generator: use .remote()")
        fid = await self._resolve()
        client = await Client.current()
        async for item in client.call_gen(fid, self._request(args, kwargs)):
            yield item

    async def _spawn(self, *args: Any, **kwargs: Any) -> FunctionCall[Any]:
        fid = await self._resolve()
        self._refuse("spawn")
        client = await Client.current()
        call_id = new_id("fc")
        await client.request(
            {"t": m.SPAWN, "fid": fid, "iid": call_id, "req": self._request(args, kwargs)}
        )
        return FunctionCall(call_id)

    async def _map(
        self,
        *iterables: Iterable[Any],
        kwargs: dict[str, Any] | None = None,
        order_outputs: bool = True,
        return_exceptions: bool = False,
        wrap_returned_exceptions: bool = True,
    ) -> AsyncIterator[list[Any]]:
        await self._resolve()
        self._refuse("map")
        if not iterables:
            raise InvalidError(f"{self._label}.map() needs at least one iterable of inputs")
        inputs = zip_inputs(iterables)
        async for batch in self._run_many(inputs, kwargs or {}, order_outputs, return_exceptions):
            yield batch

    async def _starmap(
        self,
        input_iterator: Iterable[Iterable[Any]],
        *,
        kwargs: dict[str, Any] | None = None,
        order_outputs: bool = True,
        return_exceptions: bool = False,
        wrap_returned_exceptions: bool = True,
    ) -> AsyncIterator[list[Any]]:
        await self._resolve()
        self._refuse("starmap")
        inputs = star_inputs(input_iterator)
        async for batch in self._run_many(inputs, kwargs or {}, order_outputs, return_exceptions):
            yield batch

    async def _for_each(
        self,
        *iterables: Iterable[Any],
        kwargs: dict[str, Any] | None = None,
        ignore_exceptions: bool = False,
    ) -> None:
        async for batch in self._map(
            *iterables, kwargs=kwargs, order_outputs=False, return_exceptions=ignore_exceptions
        ):
            for item in batch:
                if type(item) is Raise:
                    raise item.exc

    async def _spawn_map(
        self, *iterables: Iterable[Any], kwargs: dict[str, Any] | None = None
    ) -> None:
        await self._resolve()
        self._refuse("spawn_map")
        if not iterables:
            raise InvalidError(f"{self._label}.spawn_map() needs at least one iterable of inputs")
        inputs = zip_inputs(iterables)
        # Spawns go out SPAWN_WINDOW at a time rather than one round trip after another.
        flying: set[asyncio.Future[FunctionCall[Any]]] = set()
        try:
            while True:
                try:
                    args = await next_input(inputs)
                except StopAsyncIteration:
                    break
                flying.add(asyncio.ensure_future(self._spawn(*args, **(kwargs or {}))))
                if len(flying) >= SPAWN_WINDOW:
                    done, flying = await asyncio.wait(flying, return_when=asyncio.FIRST_COMPLETED)
                    for fut in done:
                        fut.result()
            for fut in asyncio.as_completed(flying):
                await fut
        finally:
            for fut in flying:
                fut.cancel()

    async def _run_many(
        self,
        inputs: Iterator[tuple[Any, ...]] | AsyncIterator[tuple[Any, ...]],
        kwargs: dict[str, Any],
        ordered: bool,
        return_exceptions: bool,
    ) -> AsyncIterator[list[Any]]:
        """Outcomes in batches: whatever has arrived each time the loop wakes up.

        Handing out batches rather than items is what keeps a big map cheap: one wake-up
        (and, for blocking callers, one thread hop) per batch, and refills that go out
        to the server many inputs to a frame.
        """
        fid = await self._resolve()
        client = await Client.current()
        arrived: collections.deque[dict[str, Any]] = collections.deque()
        wake = asyncio.Event()
        # iid -> input index, for the inputs sent whose results have not arrived.
        index_of: dict[str, int] = {}
        buffered: dict[int, dict[str, Any]] = {}
        prefix = new_id("in")
        sent = 0
        next_out = 0
        exhausted = False

        def on_msg(msg: dict[str, Any]) -> None:
            arrived.append(msg)
            wake.set()

        try:
            while True:
                while not exhausted and sent - next_out < MAP_WINDOW:
                    try:
                        args = await next_input(inputs)
                    except StopAsyncIteration:
                        exhausted = True
                        break
                    iid = f"{prefix}.{sent}"
                    index_of[iid] = sent
                    client.submit(fid, self._request(args, kwargs), "call", on_msg, iid)
                    sent += 1
                if exhausted and next_out == sent:
                    return
                if not arrived:
                    wake.clear()
                    await wake.wait()
                batch: list[Any] = []
                while arrived:
                    msg = arrived.popleft()
                    index = index_of.pop(msg["iid"])
                    if ordered:
                        buffered[index] = msg
                        while next_out in buffered:
                            batch.append(outcome(buffered.pop(next_out), return_exceptions))
                            next_out += 1
                    else:
                        batch.append(outcome(msg, return_exceptions))
                        next_out += 1
                if batch:
                    yield batch
        finally:
            for iid in index_of:
                client.pending.pop(iid, None)

    @staticmethod
    def from_name(
        app_name: str, name: str, *, environment_name: str | None = None
    ) -> Function[..., Any]:
        """A lazy handle on a deployed function; resolved (and checked) on first use."""
        return function_from_name(app_name, name, environment_name=environment_name)

    @staticmethod
    def lookup(
        app_name: str, name: str, *, environment_name: str | None = None
    ) -> Function[..., Any]:
        """Deprecated: `from_name`, resolved at once."""
        return _deprecated_lookup(app_name, name, environment_name=environment_name)

    # The blocking methods and their `.aio` forms (ketch._utils.aio); a type checker sees
    # them with the user's own parameters and return type.
    if TYPE_CHECKING:

        @property
        def remote(self) -> Aio[P, R]: ...
        @property
        def remote_gen(self) -> AioIter[P, Any]: ...
        @property
        def spawn(self) -> Aio[P, FunctionCall[R]]: ...
        @property
        def map(self) -> MapAio[R]: ...
        @property
        def starmap(self) -> MapAio[R]: ...
        @property
        def for_each(self) -> InputsAio: ...
        @property
        def spawn_map(self) -> InputsAio: ...
    else:
        remote = aio_method(_remote, via=_RemoteAio)
        remote_gen = aio_iter_method(_remote_gen)
        spawn = aio_method(_spawn)
        map = aio_method(_map, via=MapAio)
        starmap = aio_method(_starmap, via=MapAio)
        for_each = aio_method(_for_each, via=InputsAio)
        spawn_map = aio_method(_spawn_map, via=InputsAio)


def function_from_name(
    app_name: str, name: str, *, environment_name: str | None = None
) -> Function[..., Any]:
    """A lazy handle on a deployed function; resolved (and checked) on first use."""
    if not isinstance(app_name, str) or not isinstance(name, str):
        raise InvalidError("Function.from_name(app_name, name) takes two strings")
    if "." in name:
        raise InvalidError(
            f"{name!r} looks like a class method: use Cls.from_name({app_name!r}, "
            f"{name.split('.')[0]!r}) and call the method on an instance"
        )
    return Function(
        tag=name,
        raw_f=None,
        options=FunctionOptions(),
        app=None,
        lookup=(app_name, name, environment_name),
    )


def _deprecated_lookup(
    app_name: str, name: str, *, environment_name: str | None = None
) -> Function[..., Any]:
    from ketch.exception import deprecation_warning

    deprecation_warning((2025, 1, 27), "Function.lookup is deprecated; use Function.from_name")
    fn = function_from_name(app_name, name, environment_name=environment_name)
    fn.hydrate()
    return fn
