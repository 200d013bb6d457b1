"""Dict entries in SQLite: every change is one transaction on the server's loop, so a put,
a pop or a put-if-absent is atomic however many clients write at once."""

from __future__ import annotations

import sqlite3
from typing import Any

from ketch._server.object_values import OpLog, Stored, ValueFiles
from ketch._server.store import Store

# A scan page stops after about this many value bytes (large values make short pages).
_PAGE_BYTES = 8 * 1024 * 1024


class DictEntries:
    def __init__(self, store: Store, files: ValueFiles) -> None:
        self._store = store
        self._db: sqlite3.Connection = store._db
        self.files = files

    def _row(self, oid: str, key: bytes) -> tuple[int, bytes | None, str | None] | None:
        row = self._db.execute(
            "SELECT seq, value, blob FROM dict_entries WHERE object_id = ? AND key = ?",
            (oid, key),
        ).fetchone()
        return None if row is None else (int(row[0]), row[1], row[2])

    async def get(self, oid: str, key: bytes) -> bytes | None:
        row = self._row(oid, key)
        if row is None:
            return None
        if row[2] is None:
            return bytes(row[1] or b"")
        return await self.files.read_opened(self.files.open(row[2]))

    def contains(self, oid: str, key: bytes) -> bool:
        return self._row(oid, key) is not None

    def count(self, oid: str) -> int:
        (n,) = self._db.execute(
            "SELECT COUNT(*) FROM dict_entries WHERE object_id = ?", (oid,)
        ).fetchone()
        return int(n)

    def put(
        self, oid: str, key: bytes, stored: Stored, *, skip_if_exists: bool, op_id: str | None
    ) -> bool:
        old_blob: str | None = None
        with self._store.tx() as db:
            row = db.execute(
                "SELECT seq, blob FROM dict_entries WHERE object_id = ? AND key = ?", (oid, key)
            ).fetchone()
            written = not (row is not None and skip_if_exists)
            if row is None:
                db.execute(
                    "INSERT INTO dict_entries (object_id, key, value, blob, size)"
                    " VALUES (?, ?, ?, ?, ?)",
                    (oid, key, stored.value, stored.blob, stored.size),
                )
            elif written:
                old_blob = row[1]
                db.execute(
                    "UPDATE dict_entries SET value = ?, blob = ?, size = ? WHERE seq = ?",
                    (stored.value, stored.blob, stored.size, row[0]),
                )
            OpLog.record(db, op_id, {"ok": True, "written": written})
        self.files.discard(old_blob if written else stored.blob)
        return written

    def update(self, oid: str, pairs: list[tuple[bytes, Stored]], op_id: str | None) -> None:
        old: list[str | None] = []
        with self._store.tx() as db:
            for key, stored in pairs:
                row = db.execute(
                    "SELECT seq, blob FROM dict_entries WHERE object_id = ? AND key = ?",
                    (oid, key),
                ).fetchone()
                if row is None:
                    db.execute(
                        "INSERT INTO dict_entries (object_id, key, value, blob, size)"
                        " VALUES (?, ?, ?, ?, ?)",
                        (oid, key, stored.value, stored.blob, stored.size),
                    )
                else:
                    old.append(row[1])
                    db.execute(
                        "UPDATE dict_entries SET value = ?, blob = ?, size = ? WHERE seq = ?",
                        (stored.value, stored.blob, stored.size, row[0]),
                    )
            OpLog.record(db, op_id, {"ok": True})
        self.files.discard(*old)

    async def pop(self, oid: str, key: bytes, op_id: str | None) -> bytes | None:
        row = self._row(oid, key)
        if row is None:
            return None
        seq, value, blob = row
        fh = self.files.open(blob) if blob else None
        with self._store.tx() as db:
            db.execute("DELETE FROM dict_entries WHERE seq = ?", (seq,))
            if fh is None:
                # Only inline values are kept for a replay: a large one would double its cost.
                OpLog.record(db, op_id, {"ok": True, "found": True, "value": value})
        if fh is None:
            return bytes(value or b"")
        try:
            return await self.files.read_opened(fh)
        finally:
            self.files.discard(blob)

    def clear(self, oid: str, op_id: str | None = None) -> int:
        blobs = [
            r[0]
            for r in self._db.execute(
                "SELECT blob FROM dict_entries WHERE object_id = ? AND blob IS NOT NULL", (oid,)
            )
        ]
        with self._store.tx() as db:
            cur = db.execute("DELETE FROM dict_entries WHERE object_id = ?", (oid,))
            OpLog.record(db, op_id, {"ok": True})
        self.files.discard(*blobs)
        return cur.rowcount

    async def scan(
        self, oid: str, after: int, limit: int, keys: bool, values: bool
    ) -> list[tuple[int, bytes | None, bytes | None]]:
        """A page of entries in insertion order after `after` (a seq from an earlier page)."""
        rows = self._db.execute(
            "SELECT seq, key, value, blob, size FROM dict_entries"
            " WHERE object_id = ? AND seq > ? ORDER BY seq LIMIT ?",
            (oid, after, max(1, min(limit, 10_000))),
        ).fetchall()
        # Open every file first: no await may come between reading rows and opening files.
        opened = [self.files.open(r[3]) if values and r[3] else None for r in rows]
        page: list[tuple[int, bytes | None, bytes | None]] = []
        total = 0
        for row, fh in zip(rows, opened, strict=True):
            if total > _PAGE_BYTES:
                if fh is not None:
                    fh.close()
                continue
            value: bytes | None = None
            if values:
                value = bytes(row[2]) if fh is None else await self.files.read_opened(fh)
                total += int(row[4])
            page.append((int(row[0]), bytes(row[1]) if keys else None, value))
        return page

    def blobs(self) -> set[str]:
        return {
            r[0] for r in self._db.execute("SELECT blob FROM dict_entries WHERE blob IS NOT NULL")
        }

    def summary(self, oid: str) -> dict[str, Any]:
        n, size = self._db.execute(
            "SELECT COUNT(*), COALESCE(SUM(size), 0) FROM dict_entries WHERE object_id = ?",
            (oid,),
        ).fetchone()
        return {"entries": int(n), "bytes": int(size)}
