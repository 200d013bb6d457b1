"""Dict and Queue logic without processes: the server's object module on a real SQLite
file, driven through a stand-in for the call connection; and the SDK's key and size rules."""

from __future__ import annotations

import asyncio
import itertools
import mmap
import pickle
import queue
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, cast

import pytest

from ketch._client.objects import _buffer_size, dump_key
from ketch._server import objects as objects_mod
from ketch._server.object_values import INLINE_MAX
from ketch._server.objects import Limits, ObjectServer
from ketch._server.store import Store
from ketch._utils.wire import Channel
from ketch.exception import NotFoundError, RequestSizeError


class FakeChannel:
    """Collects replies by request id, as the SDK's client would."""

    def __init__(self) -> None:
        self.replies: dict[int, asyncio.Future[dict[str, Any]]] = {}

    def send(self, msg: dict[str, Any]) -> None:
        fut = self.replies.setdefault(msg["rid"], asyncio.get_running_loop().create_future())
        fut.set_result(msg)


_rids = itertools.count(1)


class Harness:
    def __init__(self, tmp: Path, limits: Limits | None = None) -> None:
        self.tmp = tmp
        self.store = Store(tmp / "k.db")
        self.server = ObjectServer(self.store, tmp / "objects", limits)

    def reopen(self) -> None:
        self.store.close()
        self.store = Store(self.tmp / "k.db")
        self.server = ObjectServer(self.store, self.tmp / "objects")

    def start(self, ch: FakeChannel, **msg: Any) -> asyncio.Future[dict[str, Any]]:
        rid = next(_rids)
        fut = ch.replies.setdefault(rid, asyncio.get_running_loop().create_future())
        self.server.handle(cast(Channel, ch), {"t": "obj", "rid": rid, **msg})
        return fut

    async def ask(self, ch: FakeChannel, **msg: Any) -> dict[str, Any]:
        reply = await asyncio.wait_for(self.start(ch, **msg), 5)
        if not reply["ok"]:
            raise pickle.loads(reply["error"]["exc"])
        return reply

    async def open(self, ch: FakeChannel, kind: str, name: str) -> str:
        reply = await self.ask(ch, op="open", kind=kind, name=name, environment="main", create=True)
        return str(reply["object_id"])


def run(
    tmp: Path, body: Callable[[Harness], Awaitable[None]], limits: Limits | None = None
) -> None:
    async def main() -> None:
        h = Harness(tmp, limits)
        try:
            await body(h)
        finally:
            if h.server._sweeper is not None:
                h.server._sweeper.cancel()

    asyncio.run(main())


@pytest.mark.spec("D2")
def test_blocked_get_is_woken_by_a_put_not_by_polling(tmp_path: Path) -> None:
    async def body(h: Harness) -> None:
        ch = FakeChannel()
        oid = await h.open(ch, "queue", "q")
        waiting = h.start(ch, op="q.get", object_id=oid, n=1, block=True, timeout=None)
        for _ in range(20):  # let it run: it must be parked on a future, not spinning
            await asyncio.sleep(0)
        assert not waiting.done()
        assert sum(len(v) for v in h.server.queues._put_waiters.values()) == 1
        await h.ask(ch, op="q.put", object_id=oid, values=[pickle.dumps("item")])
        reply = await asyncio.wait_for(waiting, 1)
        assert reply["ok"] and reply["values"] == [pickle.dumps("item")]
        assert not h.server.queues._put_waiters

    run(tmp_path, body)


@pytest.mark.spec("D2")
def test_get_on_an_empty_queue_raises_empty_at_once_or_after_timeout(tmp_path: Path) -> None:
    async def body(h: Harness) -> None:
        ch = FakeChannel()
        oid = await h.open(ch, "queue", "q")
        with pytest.raises(queue.Empty):
            await h.ask(ch, op="q.get", object_id=oid, n=1, block=False)
        with pytest.raises(queue.Empty):
            await h.ask(ch, op="q.get", object_id=oid, n=1, block=True, timeout=0.05)
        reply = await h.ask(ch, op="q.get", object_id=oid, n=5, block=False, raise_empty=False)
        assert reply["values"] == []

    run(tmp_path, body)


@pytest.mark.spec("D1")
def test_a_resent_mutation_runs_once(tmp_path: Path) -> None:
    async def body(h: Harness) -> None:
        ch = FakeChannel()
        oid = await h.open(ch, "dict", "d")
        put = {
            "op": "d.put",
            "object_id": oid,
            "key": dump_key("k"),
            "skip_if_exists": True,
            "op_id": "op-1",
        }
        first = await h.ask(ch, **put, value=pickle.dumps(1))
        # The same request again (a client re-sending after a reconnect): same answer, and
        # it does not turn into a second write.
        again = await h.ask(ch, **put, value=pickle.dumps(2))
        assert first["written"] is True and again["written"] is True
        other = await h.ask(ch, **{**put, "op_id": "op-2"}, value=pickle.dumps(3))
        assert other["written"] is False
        got = await h.ask(ch, op="d.get", object_id=oid, key=dump_key("k"))
        assert pickle.loads(got["value"]) == 1

    run(tmp_path, body)


@pytest.mark.spec("D4")
def test_an_update_with_one_oversize_value_writes_nothing(tmp_path: Path) -> None:
    async def body(h: Harness) -> None:
        ch = FakeChannel()
        oid = await h.open(ch, "dict", "d")
        pairs = [(dump_key("a"), pickle.dumps(1)), (dump_key("b"), b"x" * 101)]
        with pytest.raises(RequestSizeError, match="nothing was written"):
            await h.ask(ch, op="d.update", object_id=oid, pairs=pairs)
        assert (await h.ask(ch, op="d.len", object_id=oid))["len"] == 0

    run(tmp_path, body, Limits(dict_value=100))


@pytest.mark.spec("D1")
def test_ephemeral_objects_go_with_their_connection(tmp_path: Path) -> None:
    async def body(h: Harness) -> None:
        owner, other = FakeChannel(), FakeChannel()
        reply = await h.ask(owner, op="ephemeral", kind="dict", environment="main")
        oid = reply["object_id"]
        hold = h.start(owner, op="hold", object_id=oid)
        await h.ask(other, op="d.put", object_id=oid, key=dump_key("k"), value=b"v")
        h.server.disconnected(cast(Channel, other))  # someone else leaving changes nothing
        assert oid in h.server.live
        h.server.disconnected(cast(Channel, owner))
        assert oid not in h.server.live
        with pytest.raises(NotFoundError, match="was deleted"):
            await h.ask(other, op="d.len", object_id=oid)
        assert not hold.done()  # the hold's task was cancelled with its connection

    run(tmp_path, body)


@pytest.mark.spec("D4")
def test_ephemeral_objects_left_by_a_crash_wait_to_be_held_again(tmp_path: Path) -> None:
    async def body(h: Harness) -> None:
        ch = FakeChannel()
        kept = (await h.ask(ch, op="ephemeral", kind="queue", environment="main"))["object_id"]
        dropped = (await h.ask(ch, op="ephemeral", kind="queue", environment="main"))["object_id"]
        h.reopen()  # a restarted server: nobody holds them yet
        h.server.sweep(0.0)
        assert {kept, dropped} <= set(h.server.live)  # within the grace period
        back = FakeChannel()
        h.start(back, op="hold", object_id=kept)
        await asyncio.sleep(0)
        h.server.sweep(10**12)
        assert kept in h.server.live and dropped not in h.server.live

    run(tmp_path, body)


@pytest.mark.spec("D2")
def test_partition_ttl_and_sweep(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async def body(h: Harness) -> None:
        ch = FakeChannel()
        oid = await h.open(ch, "queue", "q")
        await h.ask(ch, op="q.put", object_id=oid, values=[b"a"], partition="p", partition_ttl=5)
        await h.ask(ch, op="q.put", object_id=oid, values=[b"b"])
        now = objects_mod.time.time()
        monkeypatch.setattr("ketch._server.object_queues.time.time", lambda: now + 10)
        assert (await h.ask(ch, op="q.len", object_id=oid, partition="p"))["len"] == 0
        assert (await h.ask(ch, op="q.len", object_id=oid, total=True))["len"] == 1
        h.server.sweep(now + 10**6)  # the default partition's 24 h pass too
        assert h.store._db.execute("SELECT COUNT(*) FROM queue_items").fetchone()[0] == 0

    run(tmp_path, body)


@pytest.mark.spec("D1")
def test_large_values_live_in_files_and_stray_files_are_removed(tmp_path: Path) -> None:
    async def body(h: Harness) -> None:
        ch = FakeChannel()
        oid = await h.open(ch, "dict", "d")
        big = b"z" * (INLINE_MAX + 1)
        await h.ask(ch, op="d.put", object_id=oid, key=dump_key("big"), value=big)
        files = list((h.tmp / "objects").iterdir())
        assert len(files) == 1
        (h.tmp / "objects" / "v-stray").write_bytes(b"left by a crash")
        h.reopen()
        assert [p.name for p in (h.tmp / "objects").iterdir()] == [files[0].name]
        got = await h.ask(ch, op="d.get", object_id=oid, key=dump_key("big"))
        assert got["value"] == big
        await h.ask(ch, op="d.put", object_id=oid, key=dump_key("big"), value=b"small")
        assert list((h.tmp / "objects").iterdir()) == []  # the replaced file went

    run(tmp_path, body)


@pytest.mark.spec("D1")
def test_equal_keys_pickle_to_equal_bytes() -> None:
    assert dump_key(("ab", 1)) == dump_key(("a" + "b".strip(), 1))
    assert dump_key("x") != dump_key(b"x")
    assert pickle.loads(dump_key(("k", (1, 2)))) == ("k", (1, 2))


@pytest.mark.spec("D4")
def test_bytes_like_values_are_measured_without_pickling() -> None:
    assert _buffer_size(b"abc") == 3 and _buffer_size("abcd") == 4
    assert _buffer_size([1, 2, 3]) == 0
    with mmap.mmap(-1, 3 * 1024**3) as big:  # 3 GiB of address space, no memory used
        assert _buffer_size(big) == 3 * 1024**3


@pytest.mark.spec("C7")
def test_modal_names_reach_dict_and_queue() -> None:
    code = (
        "from ketch.compat.shim import install_modal_alias; install_modal_alias(); "
        "import ketch, modal, queue; from modal import Dict, Queue; "
        "from modal.queue import Queue as Q2; "
        "assert Dict is ketch.Dict and Queue is ketch.Queue is Q2 and modal.Dict is Dict; "
        "assert modal.queue.Empty is queue.Empty"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


@pytest.mark.spec("D4")
def test_deleting_a_queue_fails_its_blocked_puts_and_gets(tmp_path: Path) -> None:
    async def body(h: Harness) -> None:
        ch = FakeChannel()
        oid = await h.open(ch, "queue", "q")
        await h.ask(ch, op="q.put", object_id=oid, values=[b"1", b"2"])
        blocked_put = h.start(ch, op="q.put", object_id=oid, values=[b"3"], timeout=None)
        blocked_get = h.start(ch, op="q.get", object_id=oid, partition="p", timeout=None)
        await asyncio.sleep(0.01)
        assert not blocked_put.done() and not blocked_get.done()
        await h.ask(ch, op="delete", object_id=oid)
        for fut in (blocked_put, blocked_get):
            reply = await asyncio.wait_for(fut, 1)
            assert "was deleted" in reply["error"]["repr"]
        assert h.store._db.execute("SELECT COUNT(*) FROM queue_items").fetchone()[0] == 0

    run(tmp_path, body, Limits(partition_size=2))
