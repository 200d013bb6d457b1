"""`ketch.Dict`: a key-value store kept by the server and shared by functions and clients."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Iterator, Mapping
from typing import Any, ClassVar

from ketch._client.objects import Ephemeral, ObjectHandle, ObjectManager
from ketch._utils import payload
from ketch._utils.aio import aio_iter_method, aio_method

_MISSING = object()
# Entries fetched per round trip by keys(), values() and items().
_PAGE = 1000


class Dict(ObjectHandle):
    """A persistent dictionary on the ketch server.

    Keys and values go through cloudpickle; a key's identity is its pickled bytes, so use
    plain keys (str, int, bytes, tuples of those). Every change is atomic on the server:
    `put(k, v, skip_if_exists=True)` is a compare-and-set that exactly one concurrent
    writer wins. Each method has an `.aio` form for async code:
    `await d.get.aio("k")`.

    A value pickles to at most 1 GiB (the server's `dict_value_limit`); larger ones raise
    `RequestSizeError` and write nothing. Entries never expire; named dicts live until
    deleted (`Dict.delete(name)`), ephemeral ones until their `with` block ends.
    """

    _kind: ClassVar[str] = "dict"
    _title: ClassVar[str] = "Dict"
    objects: ClassVar[ObjectManager[Dict]]

    # -- construction -------------------------------------------------------------------
    @staticmethod
    def from_name(
        name: str, *, environment_name: str | None = None, create_if_missing: bool = False
    ) -> Dict:
        """A handle on the named dict, resolved on first use (NotFoundError then if it does
        not exist and create_if_missing is False)."""
        return Dict._from_name(
            name, environment_name=environment_name, create_if_missing=create_if_missing
        )

    @staticmethod
    def ephemeral(environment_name: str | None = None) -> Ephemeral[Dict]:
        """`with Dict.ephemeral() as d:` a nameless dict deleted when the block ends (or
        when this process's connection to the server closes)."""
        return Dict._ephemeral(environment_name)

    @staticmethod
    def delete(
        name: str, *, allow_missing: bool = False, environment_name: str | None = None
    ) -> None:
        """Delete a named dict and everything in it."""
        Dict.objects.delete(name, allow_missing=allow_missing, environment_name=environment_name)

    # -- operations ---------------------------------------------------------------------
    async def _get(self, key: Any, default: Any = None) -> Any:
        reply = await self._op("get", key=self._dump_key(key))
        return payload.loads(reply["value"]) if reply["found"] else default

    async def _put(self, key: Any, value: Any, *, skip_if_exists: bool = False) -> bool:
        """Set `key`; with skip_if_exists, only if it is absent. True if it was written."""
        reply = await self._op(
            "put",
            mutation=True,
            key=self._dump_key(key),
            value=self._dump_value(value, "dict_value", "a Dict value"),
            skip_if_exists=skip_if_exists,
        )
        return bool(reply["written"])

    async def _pop(self, key: Any, default: Any = _MISSING) -> Any:
        reply = await self._op("pop", mutation=True, key=self._dump_key(key))
        if reply["found"]:
            return payload.loads(reply["value"])
        if default is _MISSING:
            raise KeyError(key)
        return default

    async def _update(
        self, other: Mapping[Any, Any] | Iterable[tuple[Any, Any]] | None = None, /, **kwargs: Any
    ) -> None:
        """Like dict.update, in one atomic step."""
        pairs = dict(other or {}, **kwargs)
        if not pairs:
            return
        await self._op(
            "update",
            mutation=True,
            pairs=[
                (self._dump_key(k), self._dump_value(v, "dict_value", "a Dict value"))
                for k, v in pairs.items()
            ],
        )

    async def _contains(self, key: Any) -> bool:
        return bool((await self._op("contains", key=self._dump_key(key)))["found"])

    async def _len(self) -> int:
        return int((await self._op("len"))["len"])

    async def _clear(self) -> None:
        await self._op("clear", mutation=True)

    async def _scan(self, keys: bool, values: bool) -> AsyncIterator[tuple[Any, Any]]:
        after = 0
        while True:
            reply = await self._op("scan", after=after, limit=_PAGE, keys=keys, values=values)
            rows = reply["rows"]
            for seq, key, value in rows:
                after = seq
                yield (
                    payload.loads(key) if keys else None,
                    payload.loads(value) if values else None,
                )
            if not rows:
                return

    async def _keys(self) -> AsyncIterator[Any]:
        async for key, _ in self._scan(True, False):
            yield key

    async def _values(self) -> AsyncIterator[Any]:
        async for _, value in self._scan(False, True):
            yield value

    async def _items(self) -> AsyncIterator[tuple[Any, Any]]:
        async for pair in self._scan(True, True):
            yield pair

    # -- dict syntax (blocking) ---------------------------------------------------------
    def __getitem__(self, key: Any) -> Any:
        value = self.get(key, _MISSING)
        if value is _MISSING:
            raise KeyError(key)
        return value

    def __setitem__(self, key: Any, value: Any) -> None:
        self.put(key, value)

    def __delitem__(self, key: Any) -> None:
        self.pop(key)

    def __contains__(self, key: Any) -> bool:
        return self.contains(key)

    def __len__(self) -> int:
        return self.len()

    def __iter__(self) -> Iterator[Any]:
        """The keys, as iterating a dict gives (`for key in d:`)."""
        return iter(self.keys())

    def __bool__(self) -> bool:
        # A handle is always truthy: `if d:` must not cost a round trip or depend on size.
        return True

    # The blocking methods and their `.aio` forms (ketch._utils.aio).
    get = aio_method(_get)
    put = aio_method(_put)
    pop = aio_method(_pop)
    update = aio_method(_update)
    contains = aio_method(_contains)
    len = aio_method(_len)
    clear = aio_method(_clear)
    keys = aio_iter_method(_keys)
    values = aio_iter_method(_values)
    items = aio_iter_method(_items)


Dict.objects = ObjectManager(Dict)
