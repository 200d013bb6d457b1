"""Storage helpers of Dict and Queue: where values live (inline in SQLite when small, as
files when large) and the log that makes re-sent mutations run once."""

from __future__ import annotations

import asyncio
import contextlib
import os
import pickle
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from ketch._utils.ids import new_id

# Values up to this size sit in their SQLite row; larger ones get a file of their own, so
# that the database stays small and a big value is written and read off the event loop.
INLINE_MAX = 1024 * 1024


@dataclass(frozen=True)
class Stored:
    """A value ready to be written into a row: the bytes, or the name of its file."""

    value: bytes | None
    blob: str | None
    size: int


class ValueFiles:
    """The directory of large values, one file each, named by a fresh id."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    async def prepare(self, data: bytes) -> Stored:
        """Keep `data` inline, or write it to a new file first (a file no row names yet is
        harmless: start-up removes such leftovers)."""
        if len(data) <= INLINE_MAX:
            return Stored(data, None, len(data))
        name = new_id("v")
        await asyncio.to_thread(self._write, name, data)
        return Stored(None, name, len(data))

    def _write(self, name: str, data: bytes) -> None:
        tmp = self.root / f".{name}.tmp"
        with open(tmp, "wb") as fh:
            fh.write(data)
        tmp.replace(self.root / name)

    def open(self, blob: str) -> IO[bytes]:
        """Open now, on the loop, so that a concurrent overwrite (which unlinks the file)
        cannot take the value away between reading the row and reading the file."""
        return open(self.root / blob, "rb")

    async def read(self, value: bytes | None, blob: str | None) -> bytes:
        if blob is None:
            return value or b""
        fh = self.open(blob)
        try:
            return await asyncio.to_thread(fh.read)
        finally:
            fh.close()

    async def read_opened(self, fh: IO[bytes]) -> bytes:
        try:
            return await asyncio.to_thread(fh.read)
        finally:
            fh.close()

    def discard(self, *blobs: str | None) -> None:
        for blob in blobs:
            if blob:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.root / blob)

    def remove_unreferenced(self, referenced: set[str]) -> int:
        """Delete files no row names (left by a crash between writing a file and committing
        its row, or between committing a delete and unlinking)."""
        removed = 0
        for path in self.root.iterdir():
            if path.name not in referenced:
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
                    removed += 1
        return removed


class OpLog:
    """Replies of recent mutations by operation id. A client re-sends its unanswered
    requests after a reconnect; a mutation that had already committed answers from here
    instead of running twice (a second `put(skip_if_exists=True)` would say False)."""

    KEEP = 600.0

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def replay(self, op_id: str | None) -> dict[str, Any] | None:
        if not op_id:
            return None
        row = self._db.execute("SELECT reply FROM object_ops WHERE op_id = ?", (op_id,)).fetchone()
        if row is None:
            return None
        reply: dict[str, Any] = pickle.loads(row[0])
        return reply

    @staticmethod
    def record(db: sqlite3.Connection, op_id: str | None, reply: dict[str, Any]) -> None:
        """Called inside the mutation's own transaction, so both commit or neither."""
        if op_id:
            db.execute(
                "INSERT OR REPLACE INTO object_ops VALUES (?, ?, ?)",
                (op_id, pickle.dumps(reply, protocol=5), time.time()),
            )

    def prune(self, now: float) -> None:
        self._db.execute("DELETE FROM object_ops WHERE created < ?", (now - self.KEEP,))
