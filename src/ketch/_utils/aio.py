"""One background event loop per process, so that the async SDK core also has a blocking face.

Every SDK operation is written once, as a coroutine. Blocking calls submit it to the loop
thread and wait; `.aio` forms hand the coroutine to the caller's own loop.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Generator
from typing import Any, Concatenate, Generic, ParamSpec, TypeVar, overload

T = TypeVar("T")
S = TypeVar("S")
P = ParamSpec("P")

_lock = threading.Lock()
_loop: asyncio.AbstractEventLoop | None = None
_thread: threading.Thread | None = None


def background_loop() -> asyncio.AbstractEventLoop:
    """The process-wide SDK loop, started on first use in a daemon thread."""
    global _loop, _thread
    with _lock:
        if _loop is None or not _loop.is_running() or _thread is None or not _thread.is_alive():
            loop = _new_loop()
            ready = threading.Event()

            def run() -> None:
                asyncio.set_event_loop(loop)
                loop.call_soon(ready.set)
                loop.run_forever()

            _thread = threading.Thread(target=run, name="ketch-sdk-loop", daemon=True)
            _thread.start()
            ready.wait()
            _loop = loop
            atexit.register(_shutdown, loop)
        return _loop


def _new_loop() -> asyncio.AbstractEventLoop:
    """uvloop where it is installed: the SDK loop sits on every call's path."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
    return loop


def _shutdown(loop: asyncio.AbstractEventLoop) -> None:
    """Cancel the SDK's background tasks at exit, so nothing is torn down mid-flight."""

    async def cancel_all() -> None:
        me = asyncio.current_task()
        tasks = [t for t in asyncio.all_tasks() if t is not me]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    if loop.is_running():
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(cancel_all(), loop).result(2.0)
        loop.call_soon_threadsafe(loop.stop)


def in_background_thread() -> bool:
    return _thread is not None and threading.current_thread() is _thread


def in_running_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run an SDK coroutine to completion from blocking code."""
    if in_background_thread():
        coro.close()
        raise RuntimeError("blocking ketch call made from ketch's own event loop; use .aio")
    fut = asyncio.run_coroutine_threadsafe(coro, background_loop())
    try:
        return fut.result()
    except KeyboardInterrupt:
        fut.cancel()
        raise


async def run_async(coro: Coroutine[Any, Any, T]) -> T:
    """Run an SDK coroutine on the SDK loop from another event loop, without blocking it."""
    loop = background_loop()
    if asyncio.get_running_loop() is loop:
        return await coro
    return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, loop))


def iter_sync(agen: AsyncIterator[T]) -> Generator[T, None, None]:
    """Drive an async iterator living on the SDK loop from blocking code."""
    loop = background_loop()
    try:
        while True:
            fut = asyncio.run_coroutine_threadsafe(_anext(agen), loop)
            try:
                done, item = fut.result()
            except KeyboardInterrupt:
                fut.cancel()
                raise
            if done:
                return
            yield item
    finally:
        _close_on(loop, agen)


async def iter_async(agen: AsyncIterator[T]) -> AsyncIterator[T]:
    """Drive an async iterator living on the SDK loop from another event loop."""
    loop = background_loop()
    if asyncio.get_running_loop() is loop:
        async for item in agen:
            yield item
        return
    try:
        while True:
            done, item = await asyncio.wrap_future(
                asyncio.run_coroutine_threadsafe(_anext(agen), loop)
            )
            if done:
                return
            yield item
    finally:
        _close_on(loop, agen)


def _close_on(loop: asyncio.AbstractEventLoop, agen: AsyncIterator[Any]) -> None:
    """Close an async generator on the loop it lives on, when its consumer stops early."""
    aclose = getattr(agen, "aclose", None)
    if aclose is not None:
        asyncio.run_coroutine_threadsafe(aclose(), loop)


async def _anext(agen: AsyncIterator[T]) -> tuple[bool, Any]:
    try:
        return False, await agen.__anext__()
    except StopAsyncIteration:
        return True, None


class Aio(Generic[P, T]):
    """A blocking callable with an `.aio` twin, both built from one coroutine function and
    both keeping its signature for type checkers."""

    def __init__(self, afn: Callable[P, Awaitable[T]], name: str = "") -> None:
        self._afn = afn
        self.__name__ = name or getattr(afn, "__name__", "call")

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> T:
        return run_sync(_as_coro(self._afn(*args, **kwargs)))

    async def aio(self, *args: P.args, **kwargs: P.kwargs) -> T:
        return await run_async(_as_coro(self._afn(*args, **kwargs)))


class AioIter(Generic[P, T]):
    """A blocking iterator factory with an `.aio` twin, from one async-generator function."""

    def __init__(self, agen_fn: Callable[P, AsyncIterator[T]], name: str = "") -> None:
        self._agen_fn = agen_fn
        self.__name__ = name or getattr(agen_fn, "__name__", "iter")

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> Generator[T, None, None]:
        return iter_sync(self._agen_fn(*args, **kwargs))

    def aio(self, *args: P.args, **kwargs: P.kwargs) -> AsyncIterator[T]:
        return iter_async(self._agen_fn(*args, **kwargs))


class aio_method(Generic[S, P, T]):
    """The sync/`.aio` pair of an SDK method, written once: in a class body,
    `get = aio_method(_get)` (or `@aio_method` on the coroutine) makes `obj.get(...)` block
    and `await obj.get.aio(...)` not, both with `_get`'s signature. The pair is built on an
    instance's first use and kept in its `__dict__`, so later calls cost what a plain
    attribute does (the descriptor has no `__set__`, so the instance's entry wins)."""

    def __init__(
        self,
        afn: Callable[Concatenate[S, P], Awaitable[T]],
        *,
        via: Callable[[Callable[..., Any], str], Any] = Aio,
    ) -> None:
        self._afn = afn
        self._name = getattr(afn, "__name__", "call").lstrip("_")
        # What pairs the two forms: `Aio`, or a variant that shapes them (`.map`'s).
        self._via = via

    def __set_name__(self, owner: type, name: str) -> None:
        self._name = name

    @overload
    def __get__(self, obj: None, owner: type | None = None) -> aio_method[S, P, T]: ...
    @overload
    def __get__(self, obj: S, owner: type | None = None) -> Aio[P, T]: ...
    def __get__(self, obj: S | None, owner: type | None = None) -> Any:
        if obj is None:
            return self
        # By name, so that a subclass's override of the coroutine is the one called.
        bound: Aio[P, T] = self._via(getattr(obj, self._afn.__name__), self._name)
        obj.__dict__[self._name] = bound
        return bound


class aio_iter_method(Generic[S, P, T]):
    """`aio_method` for an async-generator function: `obj.keys()` iterates blocking,
    `obj.keys.aio()` is an async iterator."""

    def __init__(self, agen_fn: Callable[Concatenate[S, P], AsyncIterator[T]]) -> None:
        self._agen_fn = agen_fn
        self._name = getattr(agen_fn, "__name__", "iter").lstrip("_")

    def __set_name__(self, owner: type, name: str) -> None:
        self._name = name

    @overload
    def __get__(self, obj: None, owner: type | None = None) -> aio_iter_method[S, P, T]: ...
    @overload
    def __get__(self, obj: S, owner: type | None = None) -> AioIter[P, T]: ...
    def __get__(self, obj: S | None, owner: type | None = None) -> Any:
        if obj is None:
            return self
        bound: AioIter[P, T] = AioIter(getattr(obj, self._agen_fn.__name__), self._name)
        obj.__dict__[self._name] = bound
        return bound


async def _await(aw: Awaitable[T]) -> T:
    return await aw


def _as_coro(aw: Awaitable[T]) -> Coroutine[Any, Any, T]:
    if asyncio.iscoroutine(aw):
        return aw
    return _await(aw)
