"""Queue items in SQLite, FIFO per partition, with blocking get/put woken by futures.

A waiting `get` registers a future for its partition and sleeps on it; a `put` resolves the
futures of that partition, and each woken getter tries again. Nothing polls. Items leave the
table in the same transaction that hands them to a getter (at-most-once delivery).
"""

from __future__ import annotations

import asyncio
import queue
import sqlite3
import time
from collections.abc import Iterable

from ketch._server.object_values import OpLog, Stored, ValueFiles
from ketch._server.store import Store
from ketch.exception import InvalidError, ResourceExhaustedError

PartKey = tuple[str, str]  # (object id, partition)

MAX_PARTITIONS = 100_000
# How many items one iterate() page carries at most.
_NEXT_PAGE = 100


class QueueItems:
    def __init__(self, store: Store, files: ValueFiles, partition_size: int) -> None:
        self._store = store
        self._db: sqlite3.Connection = store._db
        self.files = files
        self.partition_size = max(1, partition_size)
        # When each partition expires (last put + its TTL), kept in memory for a cheap check.
        self.expires: dict[PartKey, float] = {
            (r[0], r[1]): float(r[2])
            for r in self._db.execute("SELECT object_id, partition, expires FROM queue_partitions")
        }
        self._put_waiters: dict[PartKey, list[asyncio.Future[None]]] = {}
        self._space_waiters: dict[PartKey, list[asyncio.Future[None]]] = {}

    # -- waiting ------------------------------------------------------------------------
    @staticmethod
    def _wake(table: dict[PartKey, list[asyncio.Future[None]]], part: PartKey) -> None:
        for fut in table.pop(part, ()):
            if not fut.done():
                fut.set_result(None)

    @staticmethod
    async def _wait(
        table: dict[PartKey, list[asyncio.Future[None]]], part: PartKey, deadline: float | None
    ) -> bool:
        """Sleep until woken (True) or the deadline passes (False)."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        table.setdefault(part, []).append(fut)
        try:
            if deadline is None:
                await fut
                return True
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            try:
                await asyncio.wait_for(fut, remaining)
            except TimeoutError:
                return False
            return True
        finally:
            waiting = table.get(part)
            if waiting is not None and fut in waiting:
                waiting.remove(fut)
                if not waiting:
                    del table[part]

    def fail_waiters(self, oid: str, exc: BaseException) -> None:
        """Wake everyone waiting on a deleted queue with `exc`."""
        for table in (self._put_waiters, self._space_waiters):
            for part in [p for p in table if p[0] == oid]:
                for fut in table.pop(part):
                    if not fut.done():
                        fut.set_exception(exc)

    # -- expiry -------------------------------------------------------------------------
    def _expire(self, part: PartKey, now: float) -> None:
        expires = self.expires.get(part)
        if expires is not None and expires < now:
            self._drop_partition(part)

    def _drop_partition(self, part: PartKey) -> None:
        blobs = [
            r[0]
            for r in self._db.execute(
                "SELECT blob FROM queue_items WHERE object_id = ? AND partition = ?"
                " AND blob IS NOT NULL",
                part,
            )
        ]
        with self._store.tx() as db:
            db.execute("DELETE FROM queue_items WHERE object_id = ? AND partition = ?", part)
            db.execute("DELETE FROM queue_partitions WHERE object_id = ? AND partition = ?", part)
        self.expires.pop(part, None)
        self.files.discard(*blobs)
        self._wake(self._space_waiters, part)

    def sweep(self, now: float) -> int:
        expired = [p for p, t in self.expires.items() if t < now]
        for part in expired:
            self._drop_partition(part)
        return len(expired)

    # -- operations ---------------------------------------------------------------------
    def count(self, part: PartKey) -> int:
        self._expire(part, time.time())
        (n,) = self._db.execute(
            "SELECT COUNT(*) FROM queue_items WHERE object_id = ? AND partition = ?", part
        ).fetchone()
        return int(n)

    def total(self, oid: str) -> int:
        now = time.time()
        for part in [p for p in self.expires if p[0] == oid]:
            self._expire(part, now)
        (n,) = self._db.execute(
            "SELECT COUNT(*) FROM queue_items WHERE object_id = ?", (oid,)
        ).fetchone()
        return int(n)

    async def put(
        self,
        part: PartKey,
        items: list[Stored],
        ttl: float,
        *,
        block: bool,
        timeout: float | None,
        op_id: str | None,
    ) -> None:
        if len(items) > self.partition_size:
            self.files.discard(*(s.blob for s in items))
            raise queue.Full(
                f"{len(items)} items can never fit: a queue partition holds at most "
                f"{self.partition_size} (put them in smaller batches)"
            )
        deadline = None if timeout is None else asyncio.get_running_loop().time() + timeout
        try:
            while not self._try_put(part, items, ttl, op_id):
                if not block or not await self._wait(self._space_waiters, part, deadline):
                    raise queue.Full(f"the queue partition is full ({self.partition_size} items)")
        except BaseException:
            self.files.discard(*(s.blob for s in items))
            raise

    def _try_put(self, part: PartKey, items: list[Stored], ttl: float, op_id: str | None) -> bool:
        now = time.time()
        if (
            part not in self.expires
            and sum(1 for p in self.expires if p[0] == part[0]) >= MAX_PARTITIONS
        ):
            raise ResourceExhaustedError(f"a queue holds at most {MAX_PARTITIONS} partitions")
        if self.count(part) + len(items) > self.partition_size:
            return False
        expires = now + ttl
        with self._store.tx() as db:
            db.executemany(
                "INSERT INTO queue_items (object_id, partition, value, blob, size)"
                " VALUES (?, ?, ?, ?, ?)",
                [(part[0], part[1], s.value, s.blob, s.size) for s in items],
            )
            db.execute(
                "INSERT OR REPLACE INTO queue_partitions VALUES (?, ?, ?)",
                (part[0], part[1], expires),
            )
            OpLog.record(db, op_id, {"ok": True})
        self.expires[part] = expires
        self._wake(self._put_waiters, part)
        return True

    async def get(
        self, part: PartKey, n: int, *, block: bool, timeout: float | None
    ) -> list[bytes]:
        if n < 1:
            raise InvalidError(f"n_values must be at least 1, got {n}")
        deadline = None if timeout is None else asyncio.get_running_loop().time() + timeout
        while True:
            taken = await self._take(part, n)
            if taken:
                return taken
            if not block or not await self._wait(self._put_waiters, part, deadline):
                return []

    async def _take(self, part: PartKey, n: int) -> list[bytes]:
        self._expire(part, time.time())
        rows = self._db.execute(
            "SELECT seq, value, blob FROM queue_items WHERE object_id = ? AND partition = ?"
            " ORDER BY seq LIMIT ?",
            (*part, n),
        ).fetchall()
        if not rows:
            return []
        opened = {r[0]: self.files.open(r[2]) for r in rows if r[2]}
        with self._store.tx() as db:
            db.executemany("DELETE FROM queue_items WHERE seq = ?", [(r[0],) for r in rows])
        self._wake(self._space_waiters, part)
        out: list[bytes] = []
        try:
            for seq, value, blob in rows:
                out.append(
                    bytes(value) if blob is None else await self.files.read_opened(opened.pop(seq))
                )
        finally:
            for fh in opened.values():
                fh.close()
            self.files.discard(*(r[2] for r in rows))
        return out

    async def next_items(
        self, part: PartKey, after: int, timeout: float
    ) -> list[tuple[int, bytes]]:
        """Items after seq `after`, without removing them; waits up to `timeout` for one."""
        deadline = asyncio.get_running_loop().time() + max(0.0, timeout)
        while True:
            self._expire(part, time.time())
            rows = self._db.execute(
                "SELECT seq, value, blob FROM queue_items WHERE object_id = ? AND partition = ?"
                " AND seq > ? ORDER BY seq LIMIT ?",
                (*part, after, _NEXT_PAGE),
            ).fetchall()
            if rows:
                opened = {r[0]: self.files.open(r[2]) for r in rows if r[2]}
                return [
                    (
                        int(seq),
                        bytes(value) if blob is None else await self.files.read_opened(opened[seq]),
                    )
                    for seq, value, blob in rows
                ]
            if not await self._wait(self._put_waiters, part, deadline):
                return []

    def clear(self, oid: str, partition: str | None, op_id: str | None = None) -> None:
        """One partition, or every partition when `partition` is None."""
        where, args = (
            ("object_id = ?", (oid,))
            if partition is None
            else ("object_id = ? AND partition = ?", (oid, partition))
        )
        blobs = [
            r[0]
            for r in self._db.execute(
                f"SELECT blob FROM queue_items WHERE {where} AND blob IS NOT NULL", args
            )
        ]
        parts = [p for p in self.expires if p[0] == oid and partition in (None, p[1])]
        with self._store.tx() as db:
            db.execute(f"DELETE FROM queue_items WHERE {where}", args)
            db.execute(f"DELETE FROM queue_partitions WHERE {where}", args)
            OpLog.record(db, op_id, {"ok": True})
        for part in parts:
            self.expires.pop(part, None)
            self._wake(self._space_waiters, part)
        self.files.discard(*blobs)

    def partitions(self, oid: str) -> Iterable[str]:
        return [p[1] for p in self.expires if p[0] == oid]

    def blobs(self) -> set[str]:
        return {
            r[0] for r in self._db.execute("SELECT blob FROM queue_items WHERE blob IS NOT NULL")
        }
