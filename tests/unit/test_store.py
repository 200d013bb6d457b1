"""The SQLite store: migrations, app versions, spawned calls, secrets."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from ketch._server import store as store_mod
from ketch._server.store import Store


def test_migrations_apply_once_and_record_version(tmp_path: Path) -> None:
    s = Store(tmp_path / "k.db")
    assert s.schema_version == len(store_mod.MIGRATIONS)
    s.close()
    # Re-opening runs nothing again (a second CREATE TABLE would fail).
    s2 = Store(tmp_path / "k.db")
    assert s2.schema_version == len(store_mod.MIGRATIONS)
    assert s2._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_new_migration_is_applied_to_old_db(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    Store(tmp_path / "k.db").close()
    monkeypatch.setattr(
        store_mod, "MIGRATIONS", [*store_mod.MIGRATIONS, "CREATE TABLE extra (x INTEGER)"]
    )
    s = Store(tmp_path / "k.db")
    assert s.schema_version == len(store_mod.MIGRATIONS)
    s._db.execute("INSERT INTO extra VALUES (1)")


def test_failed_migration_leaves_db_unchanged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    Store(tmp_path / "k.db").close()
    monkeypatch.setattr(
        store_mod,
        "MIGRATIONS",
        [*store_mod.MIGRATIONS, "CREATE TABLE ok (x); CREATE TABLE broken ("],
    )
    with pytest.raises(sqlite3.OperationalError):
        Store(tmp_path / "k.db")
    monkeypatch.undo()
    s = Store(tmp_path / "k.db")
    assert s.schema_version == len(store_mod.MIGRATIONS)
    tables = {r[0] for r in s._db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert "ok" not in tables


def test_app_versions_and_unique_live_name(tmp_path: Path) -> None:
    s = Store(tmp_path / "k.db")
    assert s.save_app_version("ap-1", "hello", "main", "deployed", {"v": 1}) == 1
    assert s.save_app_version("ap-1", "hello", "main", "deployed", {"v": 2}) == 2
    [(app, spec)] = s.live_apps()
    assert app["version"] == 2 and json.loads(spec) == {"v": 2}
    with pytest.raises(sqlite3.IntegrityError):
        s.save_app_version("ap-2", "hello", "main", "deployed", {})
    s.set_app_state("ap-1", "stopped")
    assert s.live_apps() == []


def test_calls_lifecycle_and_expiry(tmp_path: Path) -> None:
    s = Store(tmp_path / "k.db")
    s.insert_call("fc-1", "fu-1", "ap-1", b"req")
    assert s.pending_calls() == [("fc-1", "fu-1", "ap-1", b"req")]
    s.finish_call("fc-1", "ok", b"result", attempts=1, ttl=10)
    row = s.get_call("fc-1")
    assert row is not None and row["status"] == "ok" and row["result"] == b"result"
    assert s.pending_calls() == []
    assert s.expire_results(now=row["finished"] + 5) == 0
    assert s.expire_results(now=row["finished"] + 11) == 1
    row = s.get_call("fc-1")
    assert row is not None and row["status"] == "expired" and row["result"] is None


def test_secrets_put_overwrite_delete(tmp_path: Path) -> None:
    s = Store(tmp_path / "k.db")
    assert s.put_secret("main", "db", b"x", overwrite=False)
    assert not s.put_secret("main", "db", b"y", overwrite=False)
    assert s.get_secret("main", "db") == b"x"
    assert s.put_secret("main", "db", b"y", overwrite=True)
    assert s.get_secret("main", "db") == b"y"
    assert s.get_secret("other", "db") is None
    assert s.delete_secret("main", "db")
    assert not s.delete_secret("main", "db")
