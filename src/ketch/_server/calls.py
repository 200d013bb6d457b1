"""The call port: authenticates SDK clients and containers and turns their frames into
scheduler operations."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import pickle
from typing import Any

from ketch._server.apps import AppManager
from ketch._server.errors import error_payload
from ketch._server.logs import LogHub
from ketch._server.objects import ObjectServer
from ketch._server.scheduler import Scheduler
from ketch._utils.wire import Channel, ChannelClosed, server_channel
from ketch.exception import Error, OutputExpiredError

log = logging.getLogger("ketch.calls")


class CallServer:
    def __init__(
        self, scheduler: Scheduler, apps: AppManager, logs: LogHub, token: str,
        objects: ObjectServer | None = None,
    ) -> None:
        self.scheduler = scheduler
        # Dict and Queue requests ("obj" messages) are answered by the objects module.
        self.objects = objects or ObjectServer(
            scheduler.store, scheduler.store.path.parent / "objects")
        self.apps = apps
        self.logs = logs
        self.token = token
        self.leases: dict[Channel, set[str]] = {}

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        ch = server_channel(reader, writer)
        try:
            batch = await asyncio.wait_for(ch.recv(), 10)
        except (TimeoutError, ChannelClosed, pickle.UnpicklingError, EOFError):
            ch.close()
            return
        hello = batch[0] if batch else {}
        token = str(hello.get("token", ""))
        if hello.get("t") != "hello" or not hmac.compare_digest(token, self.token):
            ch.send({"t": "denied", "reason": "bad token"})
            await asyncio.sleep(0)
            ch.close()
            return
        try:
            if hello.get("role") == "container":
                await self._container(ch, str(hello["cid"]))
            else:
                await self._client(ch, str(hello["client_id"]))
        except ChannelClosed:
            pass
        finally:
            ch.close()

    async def _container(self, ch: Channel, cid: str) -> None:
        init = self.scheduler.container_hello(cid, ch)
        if init is None:
            ch.send({"t": "stop"})
            return
        ch.send(init)
        try:
            while True:
                for msg in await ch.recv():
                    self.scheduler.container_message(cid, msg)
        finally:
            self.scheduler.container_disconnected(cid)

    async def _client(self, ch: Channel, client_id: str) -> None:
        sched = self.scheduler
        sched.client_connected(client_id, ch)
        ch.send({"t": "welcome"})
        sched._flush_undelivered(client_id)
        tasks: set[asyncio.Task[None]] = set()
        try:
            while True:
                for msg in await ch.recv():
                    t = msg["t"]
                    if t == "call":
                        sched.submit(msg["fid"], msg["iid"], msg["req"], msg["kind"], client_id)
                    elif t in ("spawn", "get", "lookup", "cancel"):
                        task = asyncio.ensure_future(self._request(ch, msg))
                        tasks.add(task)
                        task.add_done_callback(tasks.discard)
                    elif t == "obj":
                        self.objects.handle(ch, msg)
                    elif t == "logs":
                        self.logs.subscribe(msg["app_id"], ch)
                    elif t == "lease":
                        self.leases.setdefault(ch, set()).add(msg["app_id"])
                    elif t == "ping":
                        ch.send({"t": "pong", "rid": msg.get("rid")})
        finally:
            sched.client_disconnected(client_id, ch)
            self.logs.unsubscribe_all(ch)
            self.objects.disconnected(ch)
            for task in tasks:
                task.cancel()
            for app_id in self.leases.pop(ch, set()):
                # An ephemeral app lives as long as the connection of the command that made it.
                with contextlib.suppress(Error):
                    self.apps.stop(app_id)

    async def _request(self, ch: Channel, msg: dict[str, Any]) -> None:
        rid = msg.get("rid")
        try:
            reply = await self._answer(msg)
        except Error as exc:
            reply = {"ok": False, "error": error_payload(exc)}
        except Exception as exc:  # never let one bad request take the connection down
            log.exception("request failed")
            reply = {"ok": False, "error": error_payload(exc)}
        ch.send({"t": "reply", "rid": rid, **reply})

    async def _answer(self, msg: dict[str, Any]) -> dict[str, Any]:
        t = msg["t"]
        if t == "spawn":
            self.scheduler.spawn(msg["fid"], msg["iid"], msg["req"])
            return {"ok": True}
        if t == "lookup":
            info = self.apps.lookup(msg["environment"], msg["app"], msg["name"])
            return {"ok": True, "info": info}
        if t == "cancel":
            return {"ok": True, "cancelled": self.scheduler.cancel_call(msg["call_id"])}
        # get
        row = await self.scheduler.wait_call(msg["call_id"], msg.get("timeout"))
        if row is None:
            from ketch.exception import NotFoundError

            raise NotFoundError(f"no function call with id {msg['call_id']!r}")
        if row["status"] == "pending":
            return {"ok": True, "pending": True}
        if row["status"] == "expired" or row["result"] is None:
            raise OutputExpiredError(f"the result of {msg['call_id']} has expired")
        record = pickle.loads(row["result"])
        return {"ok": True, "pending": False, "result": record}
