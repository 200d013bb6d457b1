"""Bounded log retention and bounded web call records (pure logic on a temp directory)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ketch._server.logs import LogFilter, LogHub
from ketch._server.store import CallRecords, Store


@pytest.mark.spec("O1")
def test_logs_per_app_stay_within_the_retention_and_keep_the_newest(tmp_path: Path) -> None:
    hub = LogHub(tmp_path, retention_bytes=20_000)
    for i in range(5000):
        hub.emit("ap-a", "f", "ta-1", "stdout", f"line {i:05d} " + "x" * 40)
    hub.emit("ap-b", "g", "ta-2", "stderr", "other app")
    size = sum(p.stat().st_size for p in tmp_path.glob("ap-a.log*"))
    assert 0 < size <= 20_000
    lines = [e["line"] for e in hub.entries("ap-a")]
    assert lines[-1].startswith("line 04999")  # the newest kept, in order
    assert not any(line.startswith("line 00000") for line in lines)  # the oldest gone
    numbers = [int(line.split()[1]) for line in lines]
    assert numbers == sorted(numbers) and numbers == list(range(numbers[0], 5000))
    assert [e["line"] for e in hub.entries("ap-b")] == ["other app"]


@pytest.mark.spec("O1")
def test_log_filters(tmp_path: Path) -> None:
    hub = LogHub(tmp_path)
    hub.emit("ap", "f", "ta-1", "stdout", "out")
    hub.emit("ap", "f", "ta-1", "stderr", "err")
    hub.event("ap", "g", "ta-2", "container started")
    assert [e["line"] for e in hub.entries("ap", LogFilter(sources=["stderr", "system"]))] == [
        "err",
        "container started",
    ]
    assert [e["line"] for e in hub.entries("ap", LogFilter(function="g"))] == ["container started"]
    assert [e["line"] for e in hub.entries("ap", LogFilter(container="ta-1"), tail=1)] == ["err"]
    assert hub.entries("ap", LogFilter(since=4e9)) == []
    assert hub.app_of_container("ta-2") == "ap"


@pytest.mark.spec("O3")
def test_web_call_records_are_trimmed_to_the_newest_per_app(tmp_path: Path) -> None:
    store = Store(tmp_path / "k.db")
    records = CallRecords(store)
    records.add_web([(f"wr-{i}", "ap-a", "f", 200, "ok", float(i), 0.01) for i in range(50)])
    records.add_web([("wr-b", "ap-b", "f", 500, "ok", 1.0, 0.02)])
    records.trim_web("ap-a", 10)
    kept = records.web("ap-a", 100)
    assert [r["call_id"] for r in kept] == [f"wr-{i}" for i in range(49, 39, -1)]
    assert [r["call_id"] for r in records.web("ap-b", 100)] == ["wr-b"]
    assert records.web_call("wr-b") == {
        "call_id": "wr-b",
        "app_id": "ap-b",
        "function": "f",
        "http_status": 500,
        "outcome": "ok",
        "created": 1.0,
        "duration": 0.02,
    }
