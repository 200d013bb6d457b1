"""ketch.Dict against a real server and real containers (D1, D4)."""

from __future__ import annotations

import asyncio
import json
import mmap
from collections.abc import Iterator
from typing import Any

import pytest
from cli_support import assert_clean_error, ketch, ok, unique_name

import ketch as k
from ketch._client.client import Client
from ketch._utils.aio import run_sync
from ketch.exception import InvalidError, NotFoundError, RequestSizeError
from supports.shared_state import app, async_roundtrip, increment


@pytest.fixture
def shared_app(server: object) -> Iterator[None]:
    with app.run(show_logs=False):
        yield


@pytest.mark.spec("D1")
def test_eight_containers_compare_and_set_to_exactly_1600(shared_app: None) -> None:
    # from_name is lazy: hydrate() creates both now, before the containers look them up.
    d = k.Dict.from_name(unique_name("counter"), create_if_missing=True).hydrate()
    gate_name = unique_name("gate")
    gate = k.Queue.from_name(gate_name, create_if_missing=True).hydrate()
    calls = [increment.spawn(d.name, gate_name, 200) for _ in range(8)]
    # Open the gate only once all eight inputs are running: they count concurrently.
    arrived: list[str] = []  # the writers, by `supports.ident`
    while len(arrived) < 8:
        arrived += gate.get_many(8, timeout=90, partition="arrived")
    gate.put_many(["go"] * 8, partition="go")
    results = [c.get(timeout=180) for c in calls]
    assert len({pid for pid in arrived}) == 8
    assert {r["pid"] for r in results} == set(arrived)
    assert d["counter"] == 1600
    # Every value 1..1600 was claimed exactly once, by one of the eight writers.
    claims = {key[1]: pid for key, pid in d.items() if isinstance(key, tuple)}
    assert sorted(claims) == list(range(1, 1601))
    assert set(claims.values()) <= set(arrived)
    # The writers did collide (a lost claim means a retry), yet none of it was lost.
    assert sum(r["retries"] for r in results) > 0
    k.Dict.delete(d.name or "")
    k.Queue.delete(gate_name)


@pytest.mark.spec("D1")
def test_dict_methods_and_syntax(server: object) -> None:
    name = unique_name("methods")
    d = k.Dict.from_name(name, create_if_missing=True)
    assert d.get("missing") is None and d.get("missing", 7) == 7
    d["a"] = 1
    assert d.put("b", {"nested": [1, 2]}) is True
    assert d.put("a", 99, skip_if_exists=True) is False and d["a"] == 1
    d.update({"c": 3}, d=4)
    d.update([("e", 5)])
    assert "c" in d and "zz" not in d and d.contains("e")
    assert len(d) == d.len() == 5
    assert list(d.keys()) == ["a", "b", "c", "d", "e"]  # insertion order, as dict
    assert list(d) == list(d.keys())
    assert list(d.values())[:2] == [1, {"nested": [1, 2]}]
    d["a"] = 10  # overwriting keeps the position
    assert list(d.items())[:1] == [("a", 10)]
    assert d.pop("c") == 3
    with pytest.raises(KeyError):
        d.pop("c")
    with pytest.raises(KeyError):
        d["c"]
    del d["d"]
    assert sorted(d.keys()) == ["a", "b", "e"]
    # Keys are pickled: equal tuples built differently are the same key.
    d[("ab", 1)] = "t"
    assert d[("a" + "b", 1)] == "t"
    with pytest.raises(TypeError, match="hashable"):
        d.put(["a", "list"], 1)
    # A value above the inline size lives in a file on the server; it comes back whole.
    big = bytes(range(256)) * (12 * 1024)  # 3 MiB
    d["big"] = big
    assert d["big"] == big
    assert d.pop("big") == big and "big" not in d
    d.clear()
    assert len(d) == 0 and list(d.items()) == []
    # Another handle, and another process, see the same dict.
    d["shared"] = "yes"
    assert k.Dict.from_name(name)["shared"] == "yes"
    k.Dict.delete(name)
    with pytest.raises(NotFoundError, match="deleted"):
        d.get("shared")


@pytest.mark.spec("D1")
def test_aio_forms_from_async_code_and_in_a_container(shared_app: None) -> None:
    d_name, q_name = unique_name("aio"), unique_name("aioq")

    async def main() -> dict[str, Any]:
        d = k.Dict.from_name(d_name, create_if_missing=True)
        await d.put.aio("local", 1)
        await d.update.aio(x=2)
        async with k.Dict.ephemeral() as e:
            await e.put.aio("k", "v")
            eph = (await e.get.aio("k"), await e.len.aio())
        return {
            "eph": eph,
            "items": [p async for p in d.items.aio()],
            "popped": await d.pop.aio("x"),
        }

    out = asyncio.run(main())
    assert out == {"eph": ("v", 1), "items": [("local", 1), ("x", 2)], "popped": 2}
    remote = async_roundtrip.remote(d_name, q_name)
    assert remote == {
        "value": [1, 2, 3],
        "contains": True,
        "len": 2,
        "items": ["a", "b"],
        "keys": ["local", "from-async"],
    }
    k.Dict.delete(d_name)
    k.Queue.delete(q_name)


@pytest.mark.spec("D1")
def test_ephemeral_dict_is_deleted_with_its_block(server: object) -> None:
    with k.Dict.ephemeral() as d:
        d["x"] = 1
        assert d["x"] == 1 and d.name is None
        oid = d.object_id
    with pytest.raises(NotFoundError):
        k.Dict(object_id=oid).get("x")


@pytest.mark.spec("D4")
def test_names_missing_dicts_and_oversize_values_are_refused(server: object) -> None:
    for bad in ("has space", "-leading", "x" * 65, "slash/name", ""):
        with pytest.raises(InvalidError, match="invalid Dict name"):
            k.Dict.from_name(bad, create_if_missing=True).get("k")
    with pytest.raises(NotFoundError, match="create_if_missing"):
        k.Dict.from_name(unique_name("never-made")).get("k")
    with pytest.raises(InvalidError, match="string"):
        k.Dict.from_name(123)  # type: ignore[arg-type]
    d = k.Dict.from_name(unique_name("limits"), create_if_missing=True)
    d["keep"] = "me"
    # A 2 GiB value against the default 1 GiB limit. An anonymous mapping costs no memory
    # until touched, and a bytes-like value is measured before it is pickled.
    with mmap.mmap(-1, 2 * 1024**3) as two_gib:
        with pytest.raises(RequestSizeError, match="over the limit"):
            d.put("huge", two_gib)
        with pytest.raises(RequestSizeError):
            d.update({"huge": two_gib, "other": 1})
    with pytest.raises(RequestSizeError, match="key"):
        d.put("k" * (65 * 1024), 1)
    assert dict(d.items()) == {"keep": "me"}
    k.Dict.delete(d.name or "")


@pytest.fixture
def small_limits(monkeypatch: pytest.MonkeyPatch) -> None:
    """Server limits small enough to exceed cheaply (read by the server at start)."""
    monkeypatch.setenv("KETCH_DICT_VALUE_LIMIT", str(1024 * 1024))
    monkeypatch.setenv("KETCH_QUEUE_ITEM_LIMIT", "1000")
    monkeypatch.setenv("KETCH_QUEUE_PARTITION_SIZE", "10")


@pytest.mark.spec("D4")
def test_configured_limits_are_enforced_by_the_server(
    small_limits: None, fresh_server: Any
) -> None:
    d = k.Dict.from_name("limited", create_if_missing=True)
    d["small"] = b"x" * 1000
    with pytest.raises(RequestSizeError, match="1048576"):
        d["big"] = list(range(300_000))  # not bytes-like: measured after pickling
    # The server checks too: a request that skips the client's check changes nothing.
    client = run_sync(Client.current())

    async def raw_put() -> None:
        await client.request(
            {
                "t": "obj",
                "op": "d.put",
                "object_id": d.object_id,
                "key": b"raw",
                "value": b"z" * (2 * 1024 * 1024),
            }
        )

    with pytest.raises(RequestSizeError, match="nothing was written"):
        run_sync(raw_put())
    assert sorted(d.keys()) == ["small"]
    q = k.Queue.from_name("limited-q", create_if_missing=True)
    with pytest.raises(RequestSizeError):
        q.put(b"x" * 2000)
    assert q.len() == 0


@pytest.mark.spec("D4")
def test_dict_and_queue_survive_kill9(fresh_server: Any) -> None:
    d = k.Dict.from_name("durable-dict", create_if_missing=True)
    big = b"\x01\x02" * (2 * 1024 * 1024)  # 4 MiB: kept in a file, not in the row
    d.update({"a": 1, "b": [1, 2, 3], "big": big})
    q = k.Queue.from_name("durable-queue", create_if_missing=True)
    q.put_many(list(range(100)))
    q.put_many(["p1", "p2"], partition="side")
    fresh_server.kill9()
    fresh_server.start()
    d2 = k.Dict.from_name("durable-dict")
    assert dict(d2.items()) == {"a": 1, "b": [1, 2, 3], "big": big}
    q2 = k.Queue.from_name("durable-queue")
    assert q2.len(total=True) == 102
    assert q2.get_many(1000) == list(range(100))
    assert q2.get_many(10, partition="side") == ["p1", "p2"]
    # The old handles reconnect to the restarted server and keep working.
    d["after"] = True
    assert d2["after"] is True


@pytest.mark.spec("D4")
def test_cli_dict_commands(server: Any) -> None:
    name = unique_name("cli-dict")
    d = k.Dict.from_name(name, create_if_missing=True)
    d.update({"greeting": "hello", "n": 3})
    rows = json.loads(ok(ketch(server.home, "dict", "list", "--json")))
    mine = [r for r in rows if r["name"] == name]
    assert len(mine) == 1 and mine[0]["entries"] == 2
    assert ok(ketch(server.home, "dict", "get", name, "greeting")).strip() == "'hello'"
    items = ok(ketch(server.home, "dict", "items", name))
    assert "'greeting'" in items and "'hello'" in items and "'n'" in items
    items_json = json.loads(ok(ketch(server.home, "dict", "items", name, "--json")))
    assert items_json == [["greeting", "hello"], ["n", 3]]
    assert_clean_error(ketch(server.home, "dict", "get", name, "absent"), "absent")
    ok(ketch(server.home, "dict", "delete", name, "--yes"))
    assert_clean_error(ketch(server.home, "dict", "get", name, "greeting"), name)
    assert_clean_error(ketch(server.home, "dict", "delete", "bad name"), "invalid Dict name")
