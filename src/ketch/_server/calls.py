"""The call port: authenticates SDK clients and containers and turns their frames into
scheduler operations.

A peer first proves who it is: its first frame, at most `preauth_frame` bytes, must be a
hello with the server token, within `hello_timeout` seconds. Until then nothing it sends is
decoded beyond msgpack (never unpickled), a frame declared over the cap is refused unread,
and at most `max_unauthenticated` such connections are open at once on each listener (the
rest are closed as they arrive; the unix socket has a budget of its own, so that a flood of
TCP connections cannot keep containers out). After the hello the peer's frames may be up
to `max_message` bytes, and each message is checked (`messages.py`) before anything acts
on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import pickle
from dataclasses import dataclass
from typing import Any

from ketch._server import messages
from ketch._server.apps import AppManager
from ketch._server.errors import error_payload
from ketch._server.logs import LogHub
from ketch._server.objects import ObjectServer
from ketch._server.scheduler import Scheduler
from ketch._utils.wire import Channel, ChannelClosed, server_channel
from ketch.exception import Error, InvalidError, OutputExpiredError

log = logging.getLogger("ketch.calls")

# Room for a message's envelope around the largest payload a peer may send.
_ENVELOPE = 64 * 1024


@dataclass(frozen=True)
class CallLimits:
    """What the call port accepts (see docs/configuration.md)."""

    preauth_frame: int = 64 * 1024
    max_message: int = 2 * 1024**3
    hello_timeout: float = 10.0
    max_unauthenticated: int = 128


class CallServer:
    def __init__(
        self,
        scheduler: Scheduler,
        apps: AppManager,
        logs: LogHub,
        token: str,
        objects: ObjectServer | None = None,
        limits: CallLimits | None = None,
    ) -> None:
        self.scheduler = scheduler
        # Dict and Queue requests ("obj" messages) are answered by the objects module.
        self.objects = objects or ObjectServer(
            scheduler.store, scheduler.store.path.parent / "objects"
        )
        self.apps = apps
        self.logs = logs
        self.token = token
        self.limits = limits or CallLimits()
        self.leases: dict[Channel, set[str]] = {}
        # Connections waiting for their hello, per listener ("tcp", "unix").
        self.unauthenticated: dict[str, int] = {"tcp": 0, "unix": 0}
        # Connections closed unheard because too many were waiting for their hello.
        self.refused = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        listener = "unix" if isinstance(writer.get_extra_info("sockname"), str) else "tcp"
        waiting = self.unauthenticated[listener]
        if waiting >= self.limits.max_unauthenticated:
            self.refused += 1
            if self.refused in (1, 100) or self.refused % 10_000 == 0:
                log.warning(
                    "call port: %d connections refused, %d waiting for their hello on %s "
                    "(max_unauthenticated)",
                    self.refused,
                    waiting,
                    listener,
                )
            writer.transport.abort()
            return
        self.unauthenticated[listener] += 1
        try:
            ch = server_channel(reader, writer, self.limits.preauth_frame)
            hello = await self._hello(ch)
        finally:
            self.unauthenticated[listener] -= 1
        if hello is None:
            return
        ch.max_frame = self.limits.max_message + _ENVELOPE
        try:
            if hello["role"] == "container":
                await self._container(ch, hello["cid"])
            else:
                await self._client(ch, hello["client_id"])
        except ChannelClosed:
            pass
        finally:
            ch.close()

    async def _hello(self, ch: Channel) -> dict[str, Any] | None:
        """The peer's checked hello, or None once the connection is closed."""
        try:
            batch = await asyncio.wait_for(ch.recv(), self.limits.hello_timeout)
        except (TimeoutError, ChannelClosed):
            ch.close()
            return None
        hello = messages.check_hello(batch)
        if hello is None:
            ch.close()
            return None
        if not hmac.compare_digest(hello["token"].encode(), self.token.encode()):
            ch.send({"t": "denied", "reason": "bad token"})
            await asyncio.sleep(0)
            ch.close()
            return None
        return hello

    async def _container(self, ch: Channel, cid: str) -> None:
        init = self.scheduler.container_hello(cid, ch)
        if init is None:
            ch.send({"t": "stop"})
            return
        ch.send({**init, "max_message": self.limits.max_message})
        try:
            while True:
                # Handled in a call of its own, so that no reference to the frame's
                # messages (a large result) outlives it while the next frame is awaited.
                self._container_frame(cid, await ch.recv())
        finally:
            self.scheduler.container_disconnected(cid)

    def _container_frame(self, cid: str, batch: list[dict[str, Any]]) -> None:
        for msg in batch:
            try:
                checked = messages.check_container(msg)
            except messages.BadMessage as exc:
                log.warning("container %s: %s", cid, exc)
                continue
            try:
                self.scheduler.container_message(cid, checked)
            except Exception:  # a bug here must not cut the container off
                log.exception("container %s: a %r message failed", cid, checked["t"])

    async def _client(self, ch: Channel, client_id: str) -> None:
        sched = self.scheduler
        sched.client_connected(client_id, ch)
        ch.send({"t": "welcome", "max_message": self.limits.max_message})
        sched._flush_undelivered(client_id)
        tasks: set[asyncio.Task[None]] = set()
        try:
            while True:
                self._client_frame(ch, client_id, await ch.recv(), tasks)
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

    def _client_frame(
        self,
        ch: Channel,
        client_id: str,
        batch: list[dict[str, Any]],
        tasks: set[asyncio.Task[None]],
    ) -> None:
        for raw in batch:
            try:
                msg = messages.check_client(raw)
            except messages.BadMessage as exc:
                log.warning("client %s: %s", client_id, exc)
                _answer_bad(ch, raw, exc)
                continue
            try:
                self._dispatch(ch, client_id, msg, tasks)
            except Exception:  # a bug here must not cut the client off
                log.exception("client %s: a %r message failed", client_id, msg["t"])

    def _dispatch(
        self, ch: Channel, client_id: str, msg: dict[str, Any], tasks: set[asyncio.Task[None]]
    ) -> None:
        t = msg["t"]
        if t == "call":
            self.scheduler.submit(msg["fid"], msg["iid"], msg["req"], msg["kind"], client_id)
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

    async def _request(self, ch: Channel, msg: dict[str, Any]) -> None:
        rid = msg.get("rid")
        try:
            reply = await self._answer(msg)
        except Error as exc:
            reply = {"ok": False, "error": error_payload(exc)}
        except Exception as exc:  # never let one bad request take the connection down
            log.exception("request failed")
            reply = {"ok": False, "error": error_payload(exc)}
        if rid is not None:
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
        # The server's own record of the result (scheduler._finish); the payload in it
        # stays opaque bytes.
        record = pickle.loads(row["result"])
        return {"ok": True, "pending": False, "result": record}


def _answer_bad(ch: Channel, raw: dict[str, Any], exc: messages.BadMessage) -> None:
    """Tell the sender of a malformed message, when it waits for an answer to it."""
    error = error_payload(InvalidError(str(exc)))
    rid = raw.get("rid")
    if isinstance(rid, int) and not isinstance(rid, bool):
        ch.send({"t": "reply", "rid": rid, "ok": False, "error": error})
    elif raw.get("t") == "call" and isinstance(raw.get("iid"), str):
        ch.send({"t": "res", "iid": raw["iid"], "ok": False, "payload": None, "error": error})
