"""ketch.Queue against a real server and real containers (D2, D4)."""

from __future__ import annotations

import json
import queue
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from cli_support import assert_clean_error, env_for, ketch, ok, unique_name

import ketch as k
from ketch.exception import InvalidError, NotFoundError
from supports.shared_state import app, consume, produce, take_from, wait_for_item


@pytest.fixture
def shared_app(server: object) -> Iterator[None]:
    with app.run(show_logs=False):
        yield


@pytest.mark.spec("D2")
def test_producer_and_three_consumers_pass_10000_items_once_each(shared_app: None) -> None:
    name = unique_name("work")
    q = k.Queue.from_name(name, create_if_missing=True).hydrate()
    consumers = [consume.spawn(name) for _ in range(3)]
    assert produce.remote(name, 10_000, 500) == 10_000
    q.put_many([None] * 3)  # one end marker per consumer
    results = [c.get(timeout=180) for c in consumers]
    received = [x for r in results for x in r["items"]]
    assert len(received) == 10_000  # nothing duplicated ...
    assert sorted(received) == list(range(10_000))  # ... and nothing lost
    # Each consumer saw its items in queue order (FIFO within the partition).
    for r in results:
        assert r["items"] == sorted(r["items"])
    assert len({r["pid"] for r in results}) == 3  # three containers consumed at once
    assert q.len() == 0
    k.Queue.delete(name)


@pytest.mark.spec("D2")
def test_blocked_get_wakes_when_an_item_is_put(shared_app: None) -> None:
    name = unique_name("wake")
    q = k.Queue.from_name(name, create_if_missing=True).hydrate()
    call = wait_for_item.spawn(name, 30.0)
    assert q.get(timeout=90, partition="ready") == "waiting"
    time.sleep(1.0)  # the consumer is now inside get(timeout=30), on an empty queue
    q.put({"job": 1})
    out = call.get(timeout=60)
    assert out["item"] == {"job": 1}
    # It waited for the item (put a second after it began) and not for its timeout.
    assert 0.5 < out["waited"] < 30
    k.Queue.delete(name)


@pytest.mark.spec("D2")
def test_ephemeral_handles_passed_to_a_function(shared_app: None) -> None:
    with k.Queue.ephemeral() as q, k.Dict.ephemeral() as d:
        q.put({"payload": 42})
        assert take_from.remote(q, d) == {"payload": 42}
        assert d["seen"] == {"payload": 42} and q.len() == 0


@pytest.mark.spec("D2")
def test_empty_queue_raises_the_stdlib_empty(server: object) -> None:
    with k.Queue.ephemeral() as q:
        # Modal's non-blocking get gives None on an empty queue; only a timeout raises.
        assert q.get(block=False) is None
        started = time.monotonic()
        with pytest.raises(queue.Empty):
            q.get(timeout=0.5)
        assert time.monotonic() - started >= 0.5
        with pytest.raises(queue.Empty):
            q.get_many(3, timeout=0.2)
        assert q.get_many(3, block=False) == []
        assert k.queue.Empty is queue.Empty


@pytest.mark.spec("D2")
def test_fifo_partitions_iterate_clear_and_len(server: object) -> None:
    with k.Queue.ephemeral() as q:
        q.put(1)
        q.put_many([2, 3])
        q.put("a", partition="left")
        q.put_many(["b", "c"], partition="right")
        assert q.len() == 3 and q.len(partition="right") == 2 and q.len(total=True) == 6
        assert list(q.iterate()) == [1, 2, 3]  # reading does not remove
        assert list(q.iterate(partition="right")) == ["b", "c"]
        assert q.get() == 1 and q.get_many(10) == [2, 3]
        assert q.get(partition="left") == "a"
        q.clear(partition="right")
        assert q.len(total=True) == 0
        q.put_many([1, 2])
        q.put(3, partition="x")
        q.clear(all=True)
        assert q.len(total=True) == 0
        for bad in ("", "p" * 65):
            with pytest.raises(InvalidError, match="partition"):
                q.put(1, partition=bad)
        with pytest.raises(InvalidError, match="partition_ttl"):
            q.put(1, partition_ttl=2 * 24 * 3600)


@pytest.mark.spec("D2")
def test_iterate_waits_for_new_items(server: object) -> None:
    with k.Queue.ephemeral() as q:
        q.put(0)
        threading.Timer(0.3, lambda: q.put(1)).start()
        assert list(q.iterate(item_poll_timeout=3.0)) == [0, 1]


@pytest.mark.spec("D2")
def test_partition_ttl_empties_the_partition(server: object) -> None:
    with k.Queue.ephemeral() as q:
        q.put("short", partition="brief", partition_ttl=1)
        q.put("long", partition="kept")
        assert q.len(partition="brief") == 1
        time.sleep(1.5)
        assert q.len(partition="brief") == 0
        assert q.get(block=False, partition="brief") is None
        assert q.get(partition="kept") == "long"


@pytest.fixture
def small_partitions(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KETCH_QUEUE_PARTITION_SIZE", "10")


@pytest.mark.spec("D2")
def test_full_partition_blocks_or_raises_full(small_partitions: None, fresh_server: Any) -> None:
    q = k.Queue.from_name("bounded", create_if_missing=True)
    q.put_many(list(range(10)))
    with pytest.raises(queue.Full):
        q.put(10, block=False)
    with pytest.raises(queue.Full):
        q.put(10, timeout=0.3)
    with pytest.raises(queue.Full, match="never fit"):
        q.put_many(list(range(11)), partition="other")
    assert q.len() == 10 and q.len(partition="other") == 0
    # A blocked put goes through as soon as a get makes room.
    threading.Timer(0.5, q.get).start()
    q.put(10, timeout=30)
    assert q.get_many(20) == list(range(1, 11))


@pytest.mark.spec("D4")
def test_deleted_queue_gives_clear_errors(server: object) -> None:
    name = unique_name("doomed")
    q = k.Queue.from_name(name, create_if_missing=True)
    q.put(1)
    blocked: dict[str, BaseException] = {}

    def wait() -> None:
        try:
            k.Queue.from_name(name).get(partition="p", timeout=60)
        except BaseException as exc:
            blocked["exc"] = exc

    waiter = threading.Thread(target=wait)
    waiter.start()
    time.sleep(0.5)
    k.Queue.delete(name)
    waiter.join(30)
    assert isinstance(blocked.get("exc"), NotFoundError), blocked
    with pytest.raises(NotFoundError, match=f"Queue '{name}' was deleted"):
        q.get(block=False)
    with pytest.raises(NotFoundError, match="not found"):
        k.Queue.from_name(name).len()
    with pytest.raises(NotFoundError):
        k.Queue.delete(name)
    k.Queue.delete(name, allow_missing=True)
    with pytest.raises(InvalidError, match="invalid Queue name"):
        k.Queue.from_name("no spaces allowed", create_if_missing=True).put(1)


@pytest.mark.spec("D2")
def test_ephemeral_queue_goes_when_its_process_dies(server: Any) -> None:
    code = """
        import sys, ketch
        cm = ketch.Queue.ephemeral()
        q = cm.__enter__()
        q.put("x")
        print(q.object_id, flush=True)
        sys.stdin.read()  # stays until killed
    """
    proc = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code)],
        env=env_for(server.home),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        oid = proc.stdout.readline().strip()
        assert oid.startswith("qu-")
        assert k.Queue(object_id=oid).len() == 1  # reachable by id while its owner lives
        proc.kill()
        proc.wait(10)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                k.Queue(object_id=oid).len()
            except NotFoundError:
                break
            time.sleep(0.1)
        else:
            pytest.fail("the ephemeral queue outlived the process that made it")
    finally:
        proc.kill()
        proc.wait(10)


@pytest.mark.spec("D2")
def test_cli_queue_commands(server: Any) -> None:
    name = unique_name("cli-q")
    q = k.Queue.from_name(name, create_if_missing=True)
    q.put_many(["first", "second", "third"])
    q.put("p", partition="side")
    rows = json.loads(ok(ketch(server.home, "queue", "list", "--json")))
    mine = [r for r in rows if r["name"] == name]
    assert len(mine) == 1 and mine[0]["items"] == 4
    assert ok(ketch(server.home, "queue", "len", name)).strip() == "3"
    assert ok(ketch(server.home, "queue", "len", name, "--total")).strip() == "4"
    assert ok(ketch(server.home, "queue", "peek", name, "2")).split() == ["'first'", "'second'"]
    assert ok(ketch(server.home, "queue", "peek", name, "--partition", "side")).strip() == "'p'"
    assert q.len() == 3  # peeking removes nothing
    ok(ketch(server.home, "queue", "clear", name))
    assert q.len() == 0 and q.len(total=True) == 1
    ok(ketch(server.home, "queue", "delete", name, "--yes"))
    assert_clean_error(ketch(server.home, "queue", "len", name), name)
