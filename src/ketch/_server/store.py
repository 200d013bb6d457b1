"""The server's durable state: one SQLite file in WAL mode, with versioned migrations."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

# Each entry moves the schema one version up; never edit a released entry, append a new one.
MIGRATIONS: list[str] = [
    """
    CREATE TABLE apps (
        app_id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        environment TEXT NOT NULL,
        state TEXT NOT NULL,            -- deployed | ephemeral | stopped
        version INTEGER NOT NULL,
        created REAL NOT NULL,
        updated REAL NOT NULL
    );
    CREATE UNIQUE INDEX apps_live_name ON apps(environment, name) WHERE state = 'deployed';
    CREATE TABLE app_versions (
        app_id TEXT NOT NULL,
        version INTEGER NOT NULL,
        spec TEXT NOT NULL,
        created REAL NOT NULL,
        PRIMARY KEY (app_id, version)
    );
    CREATE TABLE secrets (
        environment TEXT NOT NULL,
        name TEXT NOT NULL,
        data BLOB NOT NULL,
        created REAL NOT NULL,
        updated REAL NOT NULL,
        PRIMARY KEY (environment, name)
    );
    CREATE TABLE calls (
        call_id TEXT PRIMARY KEY,
        function_id TEXT NOT NULL,
        app_id TEXT NOT NULL,
        status TEXT NOT NULL,           -- pending | ok | error | cancelled
        request BLOB NOT NULL,          -- pickled input description (args, method, params)
        result BLOB,
        attempts INTEGER NOT NULL DEFAULT 0,
        created REAL NOT NULL,
        finished REAL,
        expires REAL
    );
    CREATE INDEX calls_pending ON calls(status) WHERE status = 'pending';
    """,
    """
    CREATE TABLE web_ports (
        host TEXT PRIMARY KEY,          -- the endpoint's host label
        port INTEGER NOT NULL UNIQUE
    );
    CREATE TABLE proxy_tokens (
        token_id TEXT PRIMARY KEY,
        secret_hash TEXT NOT NULL,
        created REAL NOT NULL,
        revoked REAL
    );
    CREATE TABLE meta (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );
    """,
    """
    CREATE TABLE web_calls (
        call_id TEXT PRIMARY KEY,
        app_id TEXT NOT NULL,
        function TEXT NOT NULL,
        status INTEGER NOT NULL,        -- HTTP status sent, 0 when none was
        outcome TEXT NOT NULL,          -- ok | client_gone | upstream_error | ...
        created REAL NOT NULL,
        duration REAL NOT NULL
    );
    CREATE INDEX web_calls_app ON web_calls(app_id, created);
    CREATE INDEX calls_app ON calls(app_id, created);
    """,
    """
    CREATE TABLE objects (
        object_id TEXT PRIMARY KEY,
        kind TEXT NOT NULL,             -- dict | queue
        environment TEXT NOT NULL,
        name TEXT,                      -- NULL for an ephemeral object
        created REAL NOT NULL
    );
    CREATE UNIQUE INDEX objects_name ON objects(environment, kind, name)
        WHERE name IS NOT NULL;
    CREATE TABLE dict_entries (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,  -- insertion order, kept on overwrite
        object_id TEXT NOT NULL,
        key BLOB NOT NULL,              -- the pickled key: equal bytes, same key
        value BLOB,                     -- inline value, or NULL when it is in a blob file
        blob TEXT,                      -- file under objects/ for large values
        size INTEGER NOT NULL
    );
    CREATE UNIQUE INDEX dict_entries_key ON dict_entries(object_id, key);
    CREATE TABLE queue_items (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        object_id TEXT NOT NULL,
        partition TEXT NOT NULL,        -- '' is the default partition
        value BLOB,
        blob TEXT,
        size INTEGER NOT NULL
    );
    CREATE INDEX queue_items_partition ON queue_items(object_id, partition, seq);
    CREATE TABLE queue_partitions (
        object_id TEXT NOT NULL,
        partition TEXT NOT NULL,
        expires REAL NOT NULL,          -- last put + its partition_ttl
        PRIMARY KEY (object_id, partition)
    );
    CREATE TABLE object_ops (
        op_id TEXT PRIMARY KEY,         -- a mutation re-sent after a reconnect runs once
        reply BLOB NOT NULL,
        created REAL NOT NULL
    );
    """,
    """
    CREATE TABLE volumes (
        volume_id TEXT PRIMARY KEY,     -- its directory: volumes/<environment>/<volume_id>
        environment TEXT NOT NULL,
        name TEXT,                      -- NULL for an ephemeral volume
        created REAL NOT NULL
    );
    CREATE UNIQUE INDEX volumes_name ON volumes(environment, name) WHERE name IS NOT NULL;
    """,
    """
    CREATE TABLE schedules (
        function_id TEXT PRIMARY KEY,
        app_id TEXT NOT NULL,
        spec TEXT NOT NULL,             -- the schedule as deployed: a change resets next_run
        version INTEGER NOT NULL,       -- the app version it was set under
        next_run REAL NOT NULL,         -- wall-clock seconds: kept across server restarts
        last_run REAL,
        last_call TEXT
    );
    """,
]


class Store:
    """Thin typed access to the SQLite file. One connection, used from the server's loop."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._migrate()

    def _migrate(self) -> None:
        (version,) = self._db.execute("PRAGMA user_version").fetchone()
        for i, script in enumerate(MIGRATIONS[version:], start=version + 1):
            with self.tx():
                for stmt in script.split(";"):
                    if stmt.strip():
                        self._db.execute(stmt)
                self._db.execute(f"PRAGMA user_version = {i}")

    @property
    def schema_version(self) -> int:
        return int(self._db.execute("PRAGMA user_version").fetchone()[0])

    @contextmanager
    def tx(self) -> Iterator[sqlite3.Connection]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def close(self) -> None:
        self._db.close()

    # -- apps ---------------------------------------------------------------------------
    def find_deployed_app(self, environment: str, name: str) -> dict[str, Any] | None:
        row = self._db.execute(
            "SELECT app_id, name, environment, state, version FROM apps"
            " WHERE environment = ? AND name = ? AND state = 'deployed'",
            (environment, name),
        ).fetchone()
        return _app_row(row)

    def app_environment(self, app_id: str) -> str | None:
        """The environment of an app, in whatever state it is."""
        row = self._db.execute(
            "SELECT environment FROM apps WHERE app_id = ?", (app_id,)
        ).fetchone()
        return None if row is None else str(row[0])

    def save_app_version(
        self, app_id: str, name: str, environment: str, state: str, spec: dict[str, Any]
    ) -> int:
        now = time.time()
        with self.tx() as db:
            row = db.execute("SELECT version FROM apps WHERE app_id = ?", (app_id,)).fetchone()
            version = 1 if row is None else int(row[0]) + 1
            if row is None:
                db.execute(
                    "INSERT INTO apps VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (app_id, name, environment, state, version, now, now),
                )
            else:
                db.execute(
                    "UPDATE apps SET state = ?, version = ?, updated = ? WHERE app_id = ?",
                    (state, version, now, app_id),
                )
            db.execute(
                "INSERT INTO app_versions VALUES (?, ?, ?, ?)",
                (app_id, version, json.dumps(spec), now),
            )
        return version

    def set_app_state(self, app_id: str, state: str) -> None:
        with self.tx() as db:
            db.execute(
                "UPDATE apps SET state = ?, updated = ? WHERE app_id = ?",
                (state, time.time(), app_id),
            )

    def live_apps(self) -> list[tuple[dict[str, Any], str]]:
        """Deployed apps with the spec of their current version, as stored (JSON text).

        Not decoded here: a damaged spec must not fail the listing of every app; the caller
        checks each one (`apps.load_stored`)."""
        rows = self._db.execute(
            "SELECT a.app_id, a.name, a.environment, a.state, a.version, v.spec"
            " FROM apps a JOIN app_versions v ON v.app_id = a.app_id AND v.version = a.version"
            " WHERE a.state = 'deployed'"
        ).fetchall()
        return [(_app_row(r[:5]) or {}, str(r[5])) for r in rows]

    def list_apps(self) -> list[dict[str, Any]]:
        rows = self._db.execute(
            "SELECT app_id, name, environment, state, version, created, updated FROM apps"
            " ORDER BY created"
        ).fetchall()
        return [{**(_app_row(r[:5]) or {}), "created": r[5], "updated": r[6]} for r in rows]

    def app_versions(self, app_id: str) -> list[tuple[int, str, float]]:
        """Every version of an app, oldest first: (number, stored spec as JSON text, time
        saved)."""
        rows = self._db.execute(
            "SELECT version, spec, created FROM app_versions WHERE app_id = ? ORDER BY version",
            (app_id,),
        ).fetchall()
        return [(int(r[0]), str(r[1]), float(r[2])) for r in rows]

    def mark_ephemeral_stopped(self) -> None:
        with self.tx() as db:
            db.execute("UPDATE apps SET state = 'stopped' WHERE state = 'ephemeral'")

    # -- secrets ------------------------------------------------------------------------
    def put_secret(self, environment: str, name: str, data: bytes, *, overwrite: bool) -> bool:
        now = time.time()
        with self.tx() as db:
            exists = db.execute(
                "SELECT 1 FROM secrets WHERE environment = ? AND name = ?", (environment, name)
            ).fetchone()
            if exists and not overwrite:
                return False
            db.execute(
                "INSERT INTO secrets VALUES (?, ?, ?, ?, ?) ON CONFLICT(environment, name)"
                " DO UPDATE SET data = excluded.data, updated = excluded.updated",
                (environment, name, data, now, now),
            )
        return True

    def get_secret(self, environment: str, name: str) -> bytes | None:
        row = self._db.execute(
            "SELECT data FROM secrets WHERE environment = ? AND name = ?", (environment, name)
        ).fetchone()
        return None if row is None else bytes(row[0])

    def list_secrets(self, environment: str) -> list[dict[str, Any]]:
        rows = self._db.execute(
            "SELECT name, created, updated FROM secrets WHERE environment = ? ORDER BY name",
            (environment,),
        ).fetchall()
        return [{"name": r[0], "created": r[1], "updated": r[2]} for r in rows]

    def delete_secret(self, environment: str, name: str) -> bool:
        with self.tx() as db:
            cur = db.execute(
                "DELETE FROM secrets WHERE environment = ? AND name = ?", (environment, name)
            )
        return cur.rowcount > 0

    # -- spawned calls ------------------------------------------------------------------
    def insert_call(self, call_id: str, function_id: str, app_id: str, request: bytes) -> None:
        with self.tx() as db:
            db.execute(
                "INSERT INTO calls (call_id, function_id, app_id, status, request, created)"
                " VALUES (?, ?, ?, 'pending', ?, ?)",
                (call_id, function_id, app_id, request, time.time()),
            )

    def finish_call(
        self, call_id: str, status: str, result: bytes | None, attempts: int, ttl: float
    ) -> None:
        now = time.time()
        with self.tx() as db:
            db.execute(
                "UPDATE calls SET status = ?, result = ?, attempts = ?, finished = ?,"
                " expires = ? WHERE call_id = ?",
                (status, result, attempts, now, now + ttl, call_id),
            )

    def get_call(self, call_id: str) -> dict[str, Any] | None:
        row = self._db.execute(
            "SELECT call_id, function_id, app_id, status, result, attempts, created, finished,"
            " expires FROM calls WHERE call_id = ?",
            (call_id,),
        ).fetchone()
        if row is None:
            return None
        keys = (
            "call_id",
            "function_id",
            "app_id",
            "status",
            "result",
            "attempts",
            "created",
            "finished",
            "expires",
        )
        return dict(zip(keys, row, strict=True))

    def pending_calls(self) -> list[tuple[str, str, str, bytes]]:
        rows = self._db.execute(
            "SELECT call_id, function_id, app_id, request FROM calls WHERE status = 'pending'"
            " ORDER BY created"
        ).fetchall()
        return [(r[0], r[1], r[2], bytes(r[3])) for r in rows]

    def expire_results(self, now: float) -> int:
        """Drop result payloads past their expiry, keeping the row so get() can say so."""
        with self.tx() as db:
            cur = db.execute(
                "UPDATE calls SET result = NULL, status = 'expired'"
                " WHERE expires IS NOT NULL AND expires < ? AND status != 'expired'",
                (now,),
            )
        return cur.rowcount

    # -- schedules ----------------------------------------------------------------------
    def schedule_rows(self) -> dict[str, dict[str, Any]]:
        keys = ("function_id", "app_id", "spec", "version", "next_run", "last_run", "last_call")
        rows = self._db.execute(f"SELECT {', '.join(keys)} FROM schedules").fetchall()
        return {r[0]: dict(zip(keys, r, strict=True)) for r in rows}

    def put_schedule(
        self,
        function_id: str,
        app_id: str,
        spec: str,
        version: int,
        next_run: float,
        last_run: float | None,
        last_call: str | None,
    ) -> None:
        with self.tx() as db:
            db.execute(
                "INSERT OR REPLACE INTO schedules VALUES (?, ?, ?, ?, ?, ?, ?)",
                (function_id, app_id, spec, version, next_run, last_run, last_call),
            )

    def delete_schedules(self, function_ids: list[str]) -> None:
        if not function_ids:
            return
        with self.tx() as db:
            db.executemany(
                "DELETE FROM schedules WHERE function_id = ?", [(f,) for f in function_ids]
            )

    # -- web ----------------------------------------------------------------------------
    def web_port(self, host: str) -> int | None:
        row = self._db.execute("SELECT port FROM web_ports WHERE host = ?", (host,)).fetchone()
        return None if row is None else int(row[0])

    def used_web_ports(self) -> set[int]:
        return {int(r[0]) for r in self._db.execute("SELECT port FROM web_ports")}

    def set_web_port(self, host: str, port: int) -> None:
        with self.tx() as db:
            db.execute("INSERT OR REPLACE INTO web_ports VALUES (?, ?)", (host, port))

    def get_meta(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_meta(self, key: str, value: str) -> None:
        with self.tx() as db:
            db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))

    def add_token(self, token_id: str, secret_hash: str) -> None:
        with self.tx() as db:
            db.execute(
                "INSERT INTO proxy_tokens VALUES (?, ?, ?, NULL)",
                (token_id, secret_hash, time.time()),
            )

    def live_tokens(self) -> dict[str, str]:
        rows = self._db.execute(
            "SELECT token_id, secret_hash FROM proxy_tokens WHERE revoked IS NULL"
        ).fetchall()
        return {r[0]: r[1] for r in rows}

    def list_tokens(self) -> list[dict[str, Any]]:
        rows = self._db.execute(
            "SELECT token_id, created, revoked FROM proxy_tokens ORDER BY created"
        ).fetchall()
        return [{"token_id": r[0], "created": r[1], "revoked": r[2]} for r in rows]

    def revoke_token(self, token_id: str) -> bool:
        with self.tx() as db:
            cur = db.execute(
                "UPDATE proxy_tokens SET revoked = ? WHERE token_id = ? AND revoked IS NULL",
                (time.time(), token_id),
            )
        return cur.rowcount > 0


class CallRecords:
    """Records of spawned and web calls for `ketch call list | get` (O3)."""

    def __init__(self, store: Store) -> None:
        self._db = store._db
        self._store = store

    def add_web(self, rows: list[tuple[str, str, str, int, str, float, float]]) -> None:
        with self._store.tx() as db:
            db.executemany("INSERT OR REPLACE INTO web_calls VALUES (?, ?, ?, ?, ?, ?, ?)", rows)

    def trim_web(self, app_id: str, keep: int) -> None:
        with self._store.tx() as db:
            db.execute(
                "DELETE FROM web_calls WHERE app_id = ? AND created < COALESCE((SELECT created"
                " FROM web_calls WHERE app_id = ? ORDER BY created DESC LIMIT 1 OFFSET ?), 0)",
                (app_id, app_id, max(keep - 1, 0)),
            )

    def spawned(self, app_id: str, limit: int) -> list[dict[str, Any]]:
        return self._newest(
            "SELECT call_id, function_id, status, attempts, created, finished FROM calls",
            ("call_id", "function_id", "status", "attempts", "created", "finished"),
            app_id,
            limit,
        )

    def web(self, app_id: str, limit: int) -> list[dict[str, Any]]:
        return self._newest(
            "SELECT call_id, function, status, outcome, created, duration FROM web_calls",
            ("call_id", "function", "http_status", "outcome", "created", "duration"),
            app_id,
            limit,
        )

    def _newest(
        self, select: str, keys: tuple[str, ...], app_id: str, limit: int
    ) -> list[dict[str, Any]]:
        """An app's `limit` newest rows of `select` (a fixed query), as dicts of `keys`."""
        rows = self._db.execute(
            f"{select} WHERE app_id = ? ORDER BY created DESC LIMIT ?",
            (app_id, limit),
        ).fetchall()
        return [dict(zip(keys, r, strict=True)) for r in rows]

    def web_call(self, call_id: str) -> dict[str, Any] | None:
        row = self._db.execute(
            "SELECT call_id, app_id, function, status, outcome, created, duration"
            " FROM web_calls WHERE call_id = ?",
            (call_id,),
        ).fetchone()
        if row is None:
            return None
        keys = ("call_id", "app_id", "function", "http_status", "outcome", "created", "duration")
        return dict(zip(keys, row, strict=True))


def _app_row(row: Any) -> dict[str, Any] | None:
    if row is None:
        return None
    return {
        "app_id": row[0],
        "name": row[1],
        "environment": row[2],
        "state": row[3],
        "version": row[4],
    }
