"""The SDK side of Dict and Queue: lazy handles that resolve on first use, ephemeral
objects held open by a request, and the size checks made before anything is sent."""

from __future__ import annotations

import asyncio
import contextlib
import io
import pickle
from types import TracebackType
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Self, TypeVar

from ketch._client.client import Client
from ketch._utils import payload
from ketch._utils.aio import Aio, aio_method, run_async, run_sync
from ketch._utils.ids import new_id
from ketch._utils.protocol import messages as m
from ketch.exception import InvalidError, RequestSizeError

H = TypeVar("H", bound="ObjectHandle")

# What the client assumes until the server has told it its own limits.
DEFAULT_LIMITS = {
    "dict_value": 1024**3,
    "queue_item": 1024**2,
    "partition_size": 5000,
    "key": 64 * 1024,
}


class ObjectHandle:
    """A Dict or Queue on the server, named or ephemeral. Handles pickle by reference, so
    one passed to a function (or created at import time in an app) reaches the same
    object from a container."""

    _kind: ClassVar[str]
    _title: ClassVar[str]

    def __init__(
        self,
        *,
        name: str | None = None,
        environment_name: str | None = None,
        create_if_missing: bool = False,
        object_id: str | None = None,
        limits: dict[str, int] | None = None,
    ) -> None:
        if name is not None and not isinstance(name, str):
            raise InvalidError(f"{self._title} names are strings, got {name!r}")
        self._name = name
        self._environment = environment_name
        self._create = create_if_missing
        self._object_id = object_id
        self._limits = limits

    def __reduce__(self) -> tuple[Any, ...]:
        return (
            _rebuild,
            (
                type(self),
                self._name,
                self._environment,
                self._create,
                self._object_id,
                self._limits,
            ),
        )

    def __repr__(self) -> str:
        what = repr(self._name) if self._name else (self._object_id or "unresolved")
        return f"{self._title}({what})"

    @property
    def name(self) -> str | None:
        """The name given to from_name (None for an ephemeral object)."""
        return self._name

    @property
    def object_id(self) -> str:
        """The server's id for this object ("di-…" / "qu-…"); resolves the handle."""
        if self._object_id is None:
            self.hydrate()
        assert self._object_id is not None
        return self._object_id

    async def _hydrate(self: H) -> H:
        await self._resolve()
        return self

    async def _resolve(self) -> tuple[Client, str]:
        client = await Client.current()
        if self._object_id is None:
            reply = await client.request(
                {
                    "t": m.OBJ,
                    "op": "open",
                    "kind": self._kind,
                    "name": self._name,
                    "environment": self._environment or client.config.environment,
                    "create": self._create,
                }
            )
            self._object_id, self._limits = reply["object_id"], reply["limits"]
        assert self._object_id is not None
        return client, self._object_id

    def _limit(self, what: str) -> int:
        return int((self._limits or DEFAULT_LIMITS)[what])

    async def _op(
        self, op: str, *, mutation: bool = False, waits: bool = False, **fields: Any
    ) -> dict[str, Any]:
        client, oid = await self._resolve()
        msg: dict[str, Any] = {
            "t": m.OBJ,
            "op": f"{self._kind[0]}.{op}",
            "object_id": oid,
            **fields,
        }
        if mutation:
            # The same id goes with a re-send after a reconnect, so the change happens once.
            msg["op_id"] = new_id("op")
        if not waits:
            return await client.request(msg)
        msg["wid"] = wid = new_id("w")
        try:
            return await client.request(msg)
        except asyncio.CancelledError:
            # Tell the server, or its waiting get would still take an item nobody reads.
            client.send({"t": m.OBJ, "op": "abort", "wid": wid, "rid": None})
            raise

    def _dump_value(self, value: Any, limit_name: str, what: str) -> bytes:
        limit = self._limit(limit_name)
        _refuse_if_over(_buffer_size(value), limit, what)
        data = payload.dumps(value)
        _refuse_if_over(len(data), limit, what)
        return data

    def _dump_key(self, key: Any) -> bytes:
        try:
            hash(key)
        except TypeError:
            raise TypeError(
                f"{self._title} keys must be hashable, got {type(key).__name__!r}"
            ) from None
        data = dump_key(key)
        _refuse_if_over(len(data), self._limit("key"), f"a {self._title} key")
        return data

    # -- lifecycle (class level) --------------------------------------------------------
    @classmethod
    def _from_name(
        cls: type[H],
        name: str,
        *,
        environment_name: str | None = None,
        create_if_missing: bool = False,
    ) -> H:
        if not isinstance(name, str):
            raise InvalidError(f"{cls._title}.from_name takes a name (a string), got {name!r}")
        return cls(
            name=name, environment_name=environment_name, create_if_missing=create_if_missing
        )

    @classmethod
    def _ephemeral(cls: type[H], environment_name: str | None = None) -> Ephemeral[H]:
        return Ephemeral(cls, environment_name)

    # The blocking methods and their `.aio` forms (ketch._utils.aio).
    if TYPE_CHECKING:

        @property
        def hydrate(self) -> Aio[[], Self]: ...
    else:
        hydrate = aio_method(_hydrate)


def _rebuild(
    cls: type[H],
    name: str | None,
    environment: str | None,
    create: bool,
    object_id: str | None,
    limits: dict[str, int] | None,
) -> H:
    return cls(
        name=name,
        environment_name=environment,
        create_if_missing=create,
        object_id=object_id,
        limits=limits,
    )


def dump_key(key: Any) -> bytes:
    """Pickled key bytes, which are the key's identity on the server. The pickler's memo is
    off, so equal keys built differently (`("ab", "ab")` vs `("ab", "a" + "b")`) give the
    same bytes; objects plain pickle cannot write go through cloudpickle."""
    buf = io.BytesIO()
    pickler = pickle.Pickler(buf, protocol=5)
    pickler.fast = True
    try:
        pickler.dump(key)
    except Exception:
        return payload.dumps(key)
    return buf.getvalue()


def _buffer_size(value: Any) -> int:
    """The size of a bytes-like or str value, known before pickling: a value far over the
    limit is refused without making a pickled copy of it."""
    if isinstance(value, str):
        return len(value)
    try:
        with memoryview(value) as view:
            return view.nbytes
    except TypeError:
        return 0


def _refuse_if_over(size: int, limit: int, what: str) -> None:
    if size > limit:
        raise RequestSizeError(
            f"{what} of {size} bytes is over the limit of {limit} bytes; nothing was written"
        )


class Ephemeral(Generic[H]):
    """`with X.ephemeral() as x:` (or `async with`): a nameless object that lives until the
    block ends, or until this process's connection to the server closes."""

    def __init__(self, cls: type[H], environment_name: str | None) -> None:
        self._cls = cls
        self._environment = environment_name
        self._handle: H | None = None
        self._hold: asyncio.Future[dict[str, Any]] | None = None

    async def _open(self) -> H:
        client = await Client.current()
        reply = await client.request(
            {
                "t": m.OBJ,
                "op": "ephemeral",
                "kind": self._cls._kind,
                "environment": self._environment or client.config.environment,
            }
        )
        handle = self._cls(
            object_id=reply["object_id"], limits=reply["limits"], environment_name=self._environment
        )
        # A request the server answers only when the object is deleted. The client re-sends
        # it after a reconnect, which tells a restarted server the object is still wanted.
        self._hold = asyncio.ensure_future(
            client.request({"t": m.OBJ, "op": "hold", "object_id": reply["object_id"]})
        )
        self._hold.add_done_callback(_ignore_result)
        self._handle = handle
        return handle

    async def _close(self) -> None:
        if self._handle is None or self._handle._object_id is None:
            return
        client = await Client.current()
        with contextlib.suppress(Exception):
            await client.request({"t": m.OBJ, "op": "delete", "object_id": self._handle._object_id})
        if self._hold is not None:
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(self._hold), 5)
            self._hold.cancel()

    def __enter__(self) -> H:
        return run_sync(self._open())

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        run_sync(self._close())

    async def __aenter__(self) -> H:
        return await run_async(self._open())

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await run_async(self._close())


def _ignore_result(fut: asyncio.Future[Any]) -> None:
    if not fut.cancelled():
        fut.exception()


class ObjectManager(Generic[H]):
    """`Dict.objects` / `Queue.objects`: list, create and delete named objects."""

    def __init__(self, cls: type[H]) -> None:
        self._cls = cls

    async def _list(self, *, environment_name: str | None = None) -> list[H]:
        rows = await self._info(environment_name=environment_name)
        return [
            self._cls(name=r["name"], environment_name=r["environment"], object_id=r["object_id"])
            for r in rows
        ]

    async def _request(
        self, op: str, environment_name: str | None, **fields: Any
    ) -> dict[str, Any]:
        """A request about this kind's named objects in an environment (default: the
        configured one)."""
        client = await Client.current()
        return await client.request(
            {
                "t": m.OBJ,
                "op": op,
                "kind": self._cls._kind,
                "environment": environment_name or client.config.environment,
                **fields,
            }
        )

    async def _info(self, *, environment_name: str | None = None) -> list[dict[str, Any]]:
        """The listing with sizes and dates (what `ketch dict list` prints)."""
        rows: list[dict[str, Any]] = (await self._request("list", environment_name))["objects"]
        return rows

    async def _delete(
        self, name: str, *, allow_missing: bool = False, environment_name: str | None = None
    ) -> None:
        await self._request("delete", environment_name, name=name, allow_missing=allow_missing)

    async def _create(
        self, name: str, *, allow_existing: bool = False, environment_name: str | None = None
    ) -> None:
        """Create a named object (AlreadyExistsError if it exists, unless allow_existing)."""
        await self._request(
            "open", environment_name, name=name, create=True, exclusive=not allow_existing
        )

    # The blocking methods and their `.aio` forms (ketch._utils.aio).
    list = aio_method(_list)
    delete = aio_method(_delete)
    create = aio_method(_create)
