"""How `.map`, `.starmap`, `.for_each` and `.spawn_map` take their inputs and give their
outcomes: zipping sync or async iterables, keeping async inputs on the caller's loop, and
flattening the batches of outcomes the call path delivers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Iterator
from typing import Any, Generic, TypeVar

from ketch._client.client import result_of
from ketch._utils.aio import Aio, in_running_loop, iter_async, iter_sync
from ketch.exception import InvalidError

R = TypeVar("R")


class Raise:
    """A failure in a batch of map outcomes: raised where the caller reaches it."""

    __slots__ = ("exc",)

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


def outcome(msg: dict[str, Any], return_exceptions: bool) -> Any:
    try:
        return result_of(msg)
    except Exception as exc:
        return exc if return_exceptions else Raise(exc)
    except BaseException as exc:  # InputCancellation and friends are never "returned"
        return Raise(exc)


def zip_inputs(
    iterables: tuple[Iterable[Any] | AsyncIterable[Any], ...],
) -> Iterator[tuple[Any, ...]] | AsyncIterator[tuple[Any, ...]]:
    if any(hasattr(it, "__aiter__") for it in iterables):
        return _azip(*iterables)
    return zip(*iterables, strict=False)


def star_inputs(
    input_iterator: Iterable[Iterable[Any]] | AsyncIterable[Iterable[Any]],
) -> Iterator[tuple[Any, ...]] | AsyncIterator[tuple[Any, ...]]:
    if hasattr(input_iterator, "__aiter__"):

        async def star() -> AsyncIterator[tuple[Any, ...]]:
            async for args in input_iterator:
                yield tuple(args)

        return star()
    return (tuple(args) for args in input_iterator)


async def _azip(*iterables: Iterable[Any] | AsyncIterable[Any]) -> AsyncIterator[tuple[Any, ...]]:
    """zip() over iterables of which some are async; stops at the shortest."""
    its: list[Iterator[Any] | AsyncIterator[Any]] = [
        it.__aiter__() if hasattr(it, "__aiter__") else iter(it) for it in iterables
    ]
    while True:
        row = []
        for it in its:
            try:
                row.append(await next_input(it))
            except StopAsyncIteration:
                return
        yield tuple(row)


class _CallerLoopIter:
    """An async iterable of the caller's, stepped on the caller's own loop.

    `.aio` calls run on the SDK's loop; the caller's async generator may await objects
    bound to its own loop (queues, locks, connections), so each step goes back there.
    """

    def __init__(self, iterable: AsyncIterable[Any], loop: asyncio.AbstractEventLoop) -> None:
        self._it = iterable.__aiter__()
        self._loop = loop

    def __aiter__(self) -> _CallerLoopIter:
        return self

    async def _step(self) -> tuple[bool, Any]:
        try:
            return False, await self._it.__anext__()
        except StopAsyncIteration:
            return True, None

    async def __anext__(self) -> Any:
        if asyncio.get_running_loop() is self._loop:
            return await self._it.__anext__()
        done, item = await asyncio.wrap_future(
            asyncio.run_coroutine_threadsafe(self._step(), self._loop)
        )
        if done:
            raise StopAsyncIteration
        return item


def _on_caller_loop(values: tuple[Any, ...]) -> tuple[Any, ...]:
    """Bind the async iterables among `values` to the running (caller's) loop."""
    if not any(hasattr(v, "__aiter__") for v in values):
        return values
    loop = asyncio.get_running_loop()
    return tuple(_CallerLoopIter(v, loop) if hasattr(v, "__aiter__") else v for v in values)


async def next_input(inputs: Iterator[Any] | AsyncIterator[Any]) -> Any:
    if isinstance(inputs, Iterator):
        try:
            return next(inputs)
        except StopIteration:
            raise StopAsyncIteration from None
    return await inputs.__anext__()


def _flatten_sync(batches: Iterator[list[Any]]) -> Iterator[Any]:
    try:
        for batch in batches:
            for item in batch:
                if type(item) is Raise:
                    raise item.exc
                yield item
    finally:
        close = getattr(batches, "close", None)
        if close is not None:
            close()


async def _flatten_async(batches: AsyncIterator[list[Any]]) -> AsyncIterator[Any]:
    try:
        async for batch in batches:
            for item in batch:
                if type(item) is Raise:
                    raise item.exc
                yield item
    finally:
        aclose = getattr(batches, "aclose", None)
        if aclose is not None:
            await aclose()


class MapAio(Generic[R]):
    """`.map(...)` for plain loops, `.map.aio(...)` for async ones."""

    def __init__(self, batches_fn: Callable[..., AsyncIterator[list[Any]]], name: str) -> None:
        self._batches_fn = batches_fn
        self.__name__ = name

    def __call__(self, *args: Any, **kwargs: Any) -> Iterator[R]:
        if in_running_loop():
            raise InvalidError(
                f"a plain `for x in f.{self.__name__}(...)` would block the running event loop; "
                f"use `async for x in f.{self.__name__}.aio(...)` inside async code"
            )
        return _flatten_sync(iter_sync(self._batches_fn(*args, **kwargs)))

    def aio(self, *args: Any, **kwargs: Any) -> AsyncIterator[R]:
        return _flatten_async(iter_async(self._batches_fn(*_on_caller_loop(args), **kwargs)))


class InputsAio(Aio[..., None]):
    """`for_each` / `spawn_map`: blocking, or `.aio` with async inputs kept on the caller's
    loop."""

    async def aio(self, *args: Any, **kwargs: Any) -> None:
        return await super().aio(*_on_caller_loop(args), **kwargs)
