"""Named and ephemeral Dicts and Queues: lifecycle, limits, and the `obj` requests of the
call protocol.

Every request is a message `{"t": "obj", "op": ..., "rid": ...}` on a client's call
connection and gets one `reply`, from the handler of its operation (`ObjectServer.OPS`).
Blocking operations (a Queue get, a put on a full partition) run as tasks of their
connection, and are cancelled when it closes.

Ephemeral objects are held by a request that stays open (`hold`): the object is deleted
when its holder deletes it or when the holder's connection closes. A client that loses the
server re-sends the hold when it reconnects; ephemeral objects found in the store at start
that nobody holds within `ORPHAN_GRACE` seconds are deleted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from ketch._server.errors import error_payload
from ketch._server.object_dicts import DictEntries
from ketch._server.object_queues import QueueItems
from ketch._server.object_values import OpLog, Stored, ValueFiles
from ketch._server.store import Store
from ketch._utils.ids import new_id
from ketch._utils.labels import validate_name
from ketch._utils.protocol import messages as m
from ketch._utils.wire import Channel
from ketch.exception import (
    AlreadyExistsError,
    Error,
    InvalidError,
    NotFoundError,
    RequestSizeError,
)

log = logging.getLogger("ketch.objects")

KINDS = {"dict": ("Dict", "di"), "queue": ("Queue", "qu")}
# Keys are pickled; this bounds the index SQLite keeps of them.
MAX_KEY = 64 * 1024
MAX_PARTITION_KEY = 64
MAX_PARTITION_TTL = 24 * 3600
ORPHAN_GRACE = 180.0
_SWEEP_EVERY = 30.0


@dataclass(frozen=True)
class Limits:
    dict_value: int = 1024**3
    queue_item: int = 1024**2
    partition_size: int = 5000

    def as_dict(self) -> dict[str, int]:
        return {
            "dict_value": self.dict_value,
            "queue_item": self.queue_item,
            "partition_size": self.partition_size,
            "key": MAX_KEY,
        }


@dataclass(frozen=True)
class Obj:
    object_id: str
    kind: str
    environment: str
    name: str | None

    @property
    def label(self) -> str:
        title = KINDS[self.kind][0]
        return f"{title} {self.name!r}" if self.name else f"ephemeral {title} {self.object_id}"


OpHandler = Callable[["ObjectServer", Channel, Any], Awaitable[dict[str, Any]]]


class ObjectServer:
    def __init__(self, store: Store, root: Path, limits: Limits | None = None) -> None:
        self.store = store
        self.limits = limits or Limits()
        self.files = ValueFiles(root)
        self.dicts = DictEntries(store, self.files)
        self.queues = QueueItems(store, self.files, self.limits.partition_size)
        self.ops = OpLog(store._db)
        self.live: dict[str, Obj] = {}
        self._gone: dict[str, str] = {}  # deleted object id -> label, for clear errors
        self._holder: dict[str, Channel] = {}
        self._held: dict[Channel, set[str]] = {}
        self._released: dict[str, asyncio.Future[None]] = {}
        self._tasks: dict[Channel, set[asyncio.Task[None]]] = {}
        self._waits: dict[str, asyncio.Task[None]] = {}
        self._sweeper: asyncio.Task[None] | None = None
        now = time.time()
        for oid, kind, env, name in store._db.execute(
            "SELECT object_id, kind, environment, name FROM objects"
        ):
            self.live[oid] = Obj(oid, kind, env, name)
        self._orphans = {oid: now + ORPHAN_GRACE for oid, o in self.live.items() if not o.name}
        removed = self.files.remove_unreferenced(self.dicts.blobs() | self.queues.blobs())
        if removed:
            log.info("removed %d value files no entry refers to", removed)

    # -- connection plumbing ------------------------------------------------------------
    def handle(self, ch: Channel, msg: Mapping[str, Any]) -> None:
        """Start one request; its reply goes back on `ch`."""
        if self._sweeper is None:
            self._sweeper = asyncio.ensure_future(self._sweep_forever())
        if msg.get("op") == "abort":
            # The caller gave up on a blocking request (cancelled, interrupted).
            task = self._waits.get(str(msg.get("wid")))
            if task is not None:
                task.cancel()
            return
        task = asyncio.ensure_future(self._run(ch, msg))
        tasks = self._tasks.setdefault(ch, set())
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        wid = msg.get("wid")
        if wid:
            self._waits[str(wid)] = task
            task.add_done_callback(lambda _t: self._waits.pop(str(wid), None))

    def disconnected(self, ch: Channel) -> None:
        for task in self._tasks.pop(ch, set()):
            task.cancel()
        for oid in self._held.pop(ch, set()):
            if self._holder.get(oid) is ch:
                del self._holder[oid]
                with contextlib.suppress(NotFoundError):
                    self.delete(oid)

    async def _run(self, ch: Channel, msg: Mapping[str, Any]) -> None:
        rid = msg.get("rid")
        try:
            reply = await self._answer(ch, msg)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if not isinstance(exc, (Error, queue.Empty, queue.Full)):
                log.exception("object request %s failed", msg.get("op"))
            reply = {"ok": False, "error": error_payload(exc)}
        if rid is not None:
            ch.send({"t": m.REPLY, "rid": rid, **reply})

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(_SWEEP_EVERY)
            try:
                self.sweep(time.time())
            except Exception:
                log.exception("object sweep failed")

    def sweep(self, now: float) -> None:
        """Expired queue partitions, old replay records, ephemeral objects nobody re-held."""
        self.queues.sweep(now)
        self.ops.prune(now)
        for oid, deadline in list(self._orphans.items()):
            if deadline < now:
                del self._orphans[oid]
                if oid not in self._holder and oid in self.live:
                    with contextlib.suppress(NotFoundError):
                        self.delete(oid)

    # -- lifecycle ----------------------------------------------------------------------
    def obj(self, oid: str, kind: str | None = None) -> Obj:
        o = self.live.get(oid)
        if o is None:
            gone = self._gone.get(oid)
            raise NotFoundError(f"{gone} was deleted" if gone else f"no object {oid!r}")
        if kind is not None and o.kind != kind:
            raise InvalidError(f"{oid!r} is a {KINDS[o.kind][0]}, not a {KINDS[kind][0]}")
        return o

    def environment_of(self, msg: Mapping[str, Any]) -> str | None:
        """The environment a request reaches: its object's, or the one it names; None when
        it reaches none (an unknown object, answered as ever; an abort)."""
        oid = msg.get("object_id")
        if oid:
            o = self.live.get(str(oid))
            return None if o is None else o.environment
        env = msg.get("environment")
        return None if env is None else str(env)

    def open(
        self,
        kind: str,
        environment: str,
        name: str | None,
        *,
        create: bool,
        exclusive: bool = False,
    ) -> Obj:
        title, prefix = _kind(kind)
        validate_name("environment", environment)
        if name is not None:
            validate_name(title, name)
            row = self.store._db.execute(
                "SELECT object_id FROM objects WHERE environment = ? AND kind = ? AND name = ?",
                (environment, kind, name),
            ).fetchone()
            if row is not None:
                if exclusive:
                    raise AlreadyExistsError(
                        f"{title} {name!r} already exists in environment {environment!r}"
                    )
                return self.live[row[0]]
            if not create:
                raise NotFoundError(
                    f"{title} {name!r} not found in environment {environment!r} (create it "
                    f"with {title}.from_name({name!r}, create_if_missing=True))"
                )
        o = Obj(new_id(prefix), kind, environment, name)
        with self.store.tx() as db:
            db.execute(
                "INSERT INTO objects VALUES (?, ?, ?, ?, ?)",
                (o.object_id, kind, environment, name, time.time()),
            )
        self.live[o.object_id] = o
        return o

    def find(self, kind: str, environment: str, name: str) -> Obj:
        title, _ = _kind(kind)
        validate_name(title, name)
        for o in self.live.values():
            if o.kind == kind and o.environment == environment and o.name == name:
                return o
        raise NotFoundError(f"{title} {name!r} not found in environment {environment!r}")

    def delete(self, oid: str) -> None:
        o = self.obj(oid)
        # Fail the waiters first: woken by the clear below, a blocked put would write again.
        self.queues.fail_waiters(oid, NotFoundError(f"{o.label} was deleted"))
        if o.kind == "dict":
            self.dicts.clear(oid)
        else:
            self.queues.clear(oid, None)
        with self.store.tx() as db:
            db.execute("DELETE FROM objects WHERE object_id = ?", (oid,))
        del self.live[oid]
        self._gone[oid] = o.label
        if len(self._gone) > 10_000:
            self._gone.pop(next(iter(self._gone)))
        released = self._released.pop(oid, None)
        if released is not None and not released.done():
            released.set_result(None)

    def listing(self, kind: str, environment: str) -> list[dict[str, Any]]:
        rows = self.store._db.execute(
            "SELECT object_id, name, created FROM objects WHERE kind = ? AND environment = ?"
            " AND name IS NOT NULL ORDER BY name",
            (kind, environment),
        ).fetchall()
        out = []
        for oid, name, created in rows:
            entry: dict[str, Any] = {
                "name": name,
                "object_id": oid,
                "created": created,
                "environment": environment,
            }
            if kind == "dict":
                entry.update(self.dicts.summary(oid))
            else:
                entry["items"] = self.queues.total(oid)
                entry["partitions"] = len(list(self.queues.partitions(oid)))
            out.append(entry)
        return out

    async def _hold(self, ch: Channel, oid: str) -> None:
        o = self.obj(oid)
        if o.name is not None:
            raise InvalidError(f"{o.label} is named; only ephemeral objects are held")
        self._holder[oid] = ch
        self._held.setdefault(ch, set()).add(oid)
        self._orphans.pop(oid, None)
        fut = self._released.setdefault(oid, asyncio.get_running_loop().create_future())
        await asyncio.shield(fut)

    # -- requests, by operation -----------------------------------------------------------
    async def _answer(self, ch: Channel, msg: Mapping[str, Any]) -> dict[str, Any]:
        replay = self.ops.replay(msg.get("op_id"))
        if replay is not None:
            return replay
        op = msg.get("op")
        handler = self.OPS.get(op) if isinstance(op, str) else None
        if handler is None:
            raise InvalidError(f"unknown object operation {op!r}")
        return await handler(self, ch, msg)

    async def _open_op(self, ch: Channel, msg: Mapping[str, Any]) -> dict[str, Any]:
        o = self.open(
            str(msg["kind"]),
            str(msg["environment"]),
            _name(msg.get("name")),
            create=bool(msg.get("create")),
            exclusive=bool(msg.get("exclusive")),
        )
        return {"ok": True, "object_id": o.object_id, "limits": self.limits.as_dict()}

    async def _ephemeral_op(self, ch: Channel, msg: Mapping[str, Any]) -> dict[str, Any]:
        o = self.open(str(msg["kind"]), str(msg["environment"]), None, create=True)
        # Held by this connection from the start; the client's `hold` request follows.
        self._holder[o.object_id] = ch
        self._held.setdefault(ch, set()).add(o.object_id)
        return {"ok": True, "object_id": o.object_id, "limits": self.limits.as_dict()}

    async def _hold_op(self, ch: Channel, msg: Mapping[str, Any]) -> dict[str, Any]:
        await self._hold(ch, str(msg["object_id"]))
        return {"ok": True}

    async def _delete_op(self, ch: Channel, msg: Mapping[str, Any]) -> dict[str, Any]:
        if msg.get("object_id"):
            oid = str(msg["object_id"])
        else:
            try:
                oid = self.find(
                    str(msg["kind"]), str(msg["environment"]), str(msg["name"])
                ).object_id
            except NotFoundError:
                if msg.get("allow_missing"):
                    return {"ok": True, "deleted": False}
                raise
        self.delete(oid)
        return {"ok": True, "deleted": True}

    async def _list_op(self, ch: Channel, msg: Mapping[str, Any]) -> dict[str, Any]:
        _kind(str(msg["kind"]))
        return {"ok": True, "objects": self.listing(str(msg["kind"]), str(msg["environment"]))}

    def _check_key(self, key: object) -> bytes:
        if not isinstance(key, bytes):
            raise InvalidError("keys travel pickled, as bytes")
        if len(key) > MAX_KEY:
            raise RequestSizeError(
                f"a Dict key pickles to {len(key)} bytes; the limit is {MAX_KEY}"
            )
        return key

    def _check_value(self, value: object, limit: int, what: str) -> bytes:
        if not isinstance(value, bytes):
            raise InvalidError("values travel pickled, as bytes")
        if len(value) > limit:
            raise RequestSizeError(
                f"{what} pickles to {len(value)} bytes; the limit is {limit} (nothing was written)"
            )
        return value

    def _dict(self, msg: Mapping[str, Any]) -> str:
        return self.obj(str(msg["object_id"]), "dict").object_id

    def _queue(self, msg: Mapping[str, Any]) -> str:
        return self.obj(str(msg["object_id"]), "queue").object_id

    async def _d_get(self, ch: Channel, msg: Mapping[str, Any]) -> dict[str, Any]:
        value = await self.dicts.get(self._dict(msg), self._check_key(msg["key"]))
        return {"ok": True, "found": value is not None, "value": value}

    async def _d_contains(self, ch: Channel, msg: Mapping[str, Any]) -> dict[str, Any]:
        return {
            "ok": True,
            "found": self.dicts.contains(self._dict(msg), self._check_key(msg["key"])),
        }

    async def _d_len(self, ch: Channel, msg: Mapping[str, Any]) -> dict[str, Any]:
        return {"ok": True, "len": self.dicts.count(self._dict(msg))}

    async def _d_put(self, ch: Channel, msg: Mapping[str, Any]) -> dict[str, Any]:
        oid = self._dict(msg)
        key = self._check_key(msg["key"])
        data = self._check_value(msg["value"], self.limits.dict_value, "a Dict value")
        stored = await self.files.prepare(data)
        self._still_live(oid, [stored])
        written = self.dicts.put(
            oid, key, stored, skip_if_exists=bool(msg.get("skip_if_exists")), op_id=msg.get("op_id")
        )
        return {"ok": True, "written": written}

    async def _d_update(self, ch: Channel, msg: Mapping[str, Any]) -> dict[str, Any]:
        oid = self._dict(msg)
        # Check every pair before writing any: a bad one must change nothing.
        pairs = [
            (self._check_key(k), self._check_value(v, self.limits.dict_value, "a Dict value"))
            for k, v in msg["pairs"]
        ]
        prepared = [(k, await self.files.prepare(v)) for k, v in pairs]
        self._still_live(oid, [s for _, s in prepared])
        self.dicts.update(oid, prepared, msg.get("op_id"))
        return {"ok": True}

    async def _d_pop(self, ch: Channel, msg: Mapping[str, Any]) -> dict[str, Any]:
        oid = self._dict(msg)
        value = await self.dicts.pop(oid, self._check_key(msg["key"]), msg.get("op_id"))
        return {"ok": True, "found": value is not None, "value": value}

    async def _d_clear(self, ch: Channel, msg: Mapping[str, Any]) -> dict[str, Any]:
        self.dicts.clear(self._dict(msg), msg.get("op_id"))
        return {"ok": True}

    async def _d_scan(self, ch: Channel, msg: Mapping[str, Any]) -> dict[str, Any]:
        rows = await self.dicts.scan(
            self._dict(msg),
            int(msg.get("after", 0)),
            int(msg.get("limit", 1000)),
            keys=bool(msg.get("keys", True)),
            values=bool(msg.get("values", True)),
        )
        return {"ok": True, "rows": rows}

    def _still_live(self, oid: str, prepared: list[Stored]) -> None:
        """After writing value files (an await), check the object was not deleted meanwhile."""
        try:
            self.obj(oid)
        except NotFoundError:
            self.files.discard(*(s.blob for s in prepared))
            raise

    def _partition(self, msg: Mapping[str, Any]) -> str:
        partition = msg.get("partition")
        if partition is None:
            return ""
        if (
            not isinstance(partition, str)
            or not partition
            or len(partition.encode()) > MAX_PARTITION_KEY
        ):
            raise InvalidError(
                f"a partition key is a non-empty string of at most "
                f"{MAX_PARTITION_KEY} bytes, got {partition!r}"
            )
        return partition

    async def _q_put(self, ch: Channel, msg: Mapping[str, Any]) -> dict[str, Any]:
        oid = self._queue(msg)
        part = (oid, self._partition(msg))
        ttl = float(msg.get("partition_ttl", MAX_PARTITION_TTL))
        if not 0 < ttl <= MAX_PARTITION_TTL:
            raise InvalidError(
                f"partition_ttl must be between 1 second and 24 hours "
                f"({MAX_PARTITION_TTL} s), got {ttl:g}"
            )
        values = [
            self._check_value(v, self.limits.queue_item, "a Queue item") for v in msg["values"]
        ]
        stored = [await self.files.prepare(v) for v in values]
        self._still_live(oid, stored)
        await self.queues.put(
            part,
            stored,
            ttl,
            block=bool(msg.get("block", True)),
            timeout=_timeout(msg),
            op_id=msg.get("op_id"),
        )
        return {"ok": True}

    async def _q_get(self, ch: Channel, msg: Mapping[str, Any]) -> dict[str, Any]:
        part = (self._queue(msg), self._partition(msg))
        got = await self.queues.get(
            part,
            int(msg.get("n", 1)),
            block=bool(msg.get("block", True)),
            timeout=_timeout(msg),
        )
        if not got and msg.get("raise_empty", True):
            raise queue.Empty()
        return {"ok": True, "values": got}

    async def _q_len(self, ch: Channel, msg: Mapping[str, Any]) -> dict[str, Any]:
        oid = self._queue(msg)
        if msg.get("total"):
            if msg.get("partition") is not None:
                raise InvalidError("len(total=True) counts every partition: leave partition unset")
            return {"ok": True, "len": self.queues.total(oid)}
        return {"ok": True, "len": self.queues.count((oid, self._partition(msg)))}

    async def _q_next(self, ch: Channel, msg: Mapping[str, Any]) -> dict[str, Any]:
        items = await self.queues.next_items(
            (self._queue(msg), self._partition(msg)),
            int(msg.get("after", 0)),
            float(msg.get("timeout") or 0.0),
        )
        return {"ok": True, "items": items}

    async def _q_clear(self, ch: Channel, msg: Mapping[str, Any]) -> dict[str, Any]:
        oid = self._queue(msg)
        if msg.get("all"):
            if msg.get("partition") is not None:
                raise InvalidError("clear(all=True) clears every partition: leave partition unset")
            self.queues.clear(oid, None, msg.get("op_id"))
        else:
            self.queues.clear(oid, self._partition(msg), msg.get("op_id"))
        return {"ok": True}

    # Every operation of OBJECT_OPS but "abort", which `handle` answers itself.
    OPS: ClassVar[dict[str, OpHandler]] = {
        "open": _open_op,
        "ephemeral": _ephemeral_op,
        "hold": _hold_op,
        "delete": _delete_op,
        "list": _list_op,
        "d.get": _d_get,
        "d.contains": _d_contains,
        "d.len": _d_len,
        "d.put": _d_put,
        "d.update": _d_update,
        "d.pop": _d_pop,
        "d.clear": _d_clear,
        "d.scan": _d_scan,
        "q.put": _q_put,
        "q.get": _q_get,
        "q.len": _q_len,
        "q.next": _q_next,
        "q.clear": _q_clear,
    }


def _kind(kind: str) -> tuple[str, str]:
    if kind not in KINDS:
        raise InvalidError(f"unknown object kind {kind!r}")
    return KINDS[kind]


def _name(name: object) -> str:
    if not isinstance(name, str):
        raise InvalidError(f"an object name is a string, got {name!r}")
    return name


def _timeout(msg: Mapping[str, Any]) -> float | None:
    timeout = msg.get("timeout")
    if timeout is None:
        return None
    value = float(timeout)
    if value < 0:
        raise InvalidError(f"timeout must not be negative, got {value:g}")
    return value
