"""`ketch.Queue`: a FIFO queue kept by the server, with independent partitions."""

from __future__ import annotations

import queue
from collections.abc import AsyncIterator
from typing import Any, ClassVar

from ketch._client.objects import Ephemeral, ObjectHandle, ObjectManager
from ketch._utils import payload
from ketch._utils.aio import aio_iter_method, aio_method
from ketch.exception import InvalidError

DEFAULT_PARTITION_TTL = 24 * 3600
_MAX_PARTITION_KEY = 64


class Queue(ObjectHandle):
    """A persistent FIFO queue on the ketch server, shared by functions and clients.

    A blocking `get` raises the standard library's `queue.Empty` when nothing arrives
    within `timeout` (a non-blocking one returns None, as Modal's does); a full partition
    makes `put` wait, or raise `queue.Full`, as `queue.Queue` does. A blocked `get` is woken by the
    server the moment an item is put. Each item is handed to exactly one `get`, and is
    removed before it is sent (at-most-once: an item in flight to a process that dies
    is lost).

    Partitions (`partition="key"`) are independent FIFOs; each is emptied `partition_ttl`
    seconds (default and most: 24 h) after its last put. Limits: 5,000 items per
    partition, 1 MiB per pickled item (server settings `queue_partition_size`,
    `queue_item_limit`). Every method has an `.aio` form.
    """

    _kind: ClassVar[str] = "queue"
    _title: ClassVar[str] = "Queue"
    objects: ClassVar[ObjectManager[Queue]]

    # -- construction -------------------------------------------------------------------
    @staticmethod
    def from_name(
        name: str, *, environment_name: str | None = None, create_if_missing: bool = False
    ) -> Queue:
        """A handle on the named queue, resolved on first use (NotFoundError then if it
        does not exist and create_if_missing is False)."""
        return Queue._from_name(
            name, environment_name=environment_name, create_if_missing=create_if_missing
        )

    @staticmethod
    def ephemeral(environment_name: str | None = None) -> Ephemeral[Queue]:
        """`with Queue.ephemeral() as q:` a nameless queue deleted when the block ends (or
        when this process's connection to the server closes)."""
        return Queue._ephemeral(environment_name)

    @staticmethod
    def delete(
        name: str, *, allow_missing: bool = False, environment_name: str | None = None
    ) -> None:
        """Delete a named queue and its items; waiting getters get NotFoundError."""
        Queue.objects.delete(name, allow_missing=allow_missing, environment_name=environment_name)

    # -- operations ---------------------------------------------------------------------
    async def _put(
        self,
        v: Any,
        block: bool = True,
        timeout: float | None = None,
        *,
        partition: str | None = None,
        partition_ttl: int = DEFAULT_PARTITION_TTL,
    ) -> None:
        """Add `v` at the end; on a full partition wait (up to `timeout`) or, with
        block=False, raise queue.Full at once."""
        await self._put_many([v], block, timeout, partition=partition, partition_ttl=partition_ttl)

    async def _put_many(
        self,
        vs: list[Any],
        block: bool = True,
        timeout: float | None = None,
        *,
        partition: str | None = None,
        partition_ttl: int = DEFAULT_PARTITION_TTL,
    ) -> None:
        """Add several items at once, atomically (all or none)."""
        _check_partition(partition)
        values = [self._dump_value(v, "queue_item", "a Queue item") for v in vs]
        if not values:
            return
        await self._op(
            "put",
            mutation=True,
            waits=block,
            values=values,
            partition=partition,
            partition_ttl=partition_ttl,
            block=block,
            timeout=timeout,
        )

    async def _get(
        self, block: bool = True, timeout: float | None = None, *, partition: str | None = None
    ) -> Any:
        """Remove and return the next item. With block=False an empty queue gives None at
        once (as Modal's does, so scripts that test for None keep working); a blocking get
        raises queue.Empty after `timeout` seconds (timeout=None waits forever)."""
        values = await self._take(1, block, timeout, partition, raise_empty=block)
        return values[0] if values else None

    async def _get_many(
        self,
        n_values: int,
        block: bool = True,
        timeout: float | None = None,
        *,
        partition: str | None = None,
    ) -> list[Any]:
        """Remove and return up to `n_values` items, waiting for at least one when blocking
        (queue.Empty after `timeout`). With block=False an empty queue gives []."""
        return await self._take(n_values, block, timeout, partition, raise_empty=block)

    async def _take(
        self,
        n: int,
        block: bool,
        timeout: float | None,
        partition: str | None,
        *,
        raise_empty: bool,
    ) -> list[Any]:
        _check_partition(partition)
        if not isinstance(n, int) or n < 1:
            raise InvalidError(f"n_values must be a positive int, got {n!r}")
        reply = await self._op(
            "get",
            waits=block,
            n=n,
            partition=partition,
            block=block,
            timeout=timeout if block else None,
            raise_empty=raise_empty,
        )
        return [payload.loads(v) for v in reply["values"]]

    async def _len(self, *, partition: str | None = None, total: bool = False) -> int:
        """Items in one partition (the default one unless named), or in all with total."""
        _check_partition(partition)
        return int((await self._op("len", partition=partition, total=total))["len"])

    async def _clear(self, *, partition: str | None = None, all: bool = False) -> None:
        """Empty one partition, or every partition with all=True."""
        _check_partition(partition)
        await self._op("clear", mutation=True, partition=partition, all=all)

    async def _iterate(
        self, *, partition: str | None = None, item_poll_timeout: float = 0.0
    ) -> AsyncIterator[Any]:
        """Read the items in order without removing them; stop once no new item has come
        for `item_poll_timeout` seconds (0: at the end of what is there now)."""
        _check_partition(partition)
        after = 0
        while True:
            reply = await self._op(
                "next",
                waits=item_poll_timeout > 0,
                partition=partition,
                after=after,
                timeout=item_poll_timeout,
            )
            items = reply["items"]
            if not items:
                return
            for seq, value in items:
                after = seq
                yield payload.loads(value)

    def __bool__(self) -> bool:
        return True

    # The blocking methods and their `.aio` forms (ketch._utils.aio).
    put = aio_method(_put)
    put_many = aio_method(_put_many)
    get = aio_method(_get)
    get_many = aio_method(_get_many)
    len = aio_method(_len)
    clear = aio_method(_clear)
    iterate = aio_iter_method(_iterate)


def _check_partition(partition: str | None) -> None:
    if partition is None:
        return
    if (
        not isinstance(partition, str)
        or not partition
        or len(partition.encode()) > _MAX_PARTITION_KEY
    ):
        raise InvalidError(
            f"a partition key is a non-empty string of at most "
            f"{_MAX_PARTITION_KEY} bytes, got {partition!r}"
        )


# `queue.Empty` and `queue.Full` are the standard library's, re-exported for convenience.
Empty = queue.Empty
Full = queue.Full

Queue.objects = ObjectManager(Queue)
