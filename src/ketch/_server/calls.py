"""The call port: authenticates SDK clients and containers and turns their frames into
scheduler operations.

A peer first proves who it is: its first frame, at most `preauth_frame` bytes, must be a
hello with the server token or a container's credential (SPEC I4), within `hello_timeout`
seconds. Until then nothing it sends is decoded beyond msgpack (never unpickled), a frame
declared over the cap is refused unread, and at most `max_unauthenticated` such connections
are open at once on each listener (the rest are closed as they arrive; the unix socket has a
budget of its own, so that a flood of TCP connections cannot keep containers out). After the
hello the peer's frames may be up to `max_message` bytes, and each message is checked
(`messages.py`) before anything acts on it; then the handler of its kind
(`CallServer.CLIENT_HANDLERS`) acts on it.

A credential says hello as a container only for its own container; as a client it makes a
*scoped* peer, held to its container's environment (`CallServer._refusal`).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import pickle
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

from ketch._server import messages
from ketch._server.apps import AppManager
from ketch._server.credentials import Scope
from ketch._server.errors import error_payload
from ketch._server.logs import LogHub
from ketch._server.objects import ObjectServer
from ketch._server.scheduler import Scheduler
from ketch._utils.protocol import messages as m
from ketch._utils.wire import Channel, ChannelClosed, server_channel
from ketch.exception import AuthError, Error, InvalidError, NotFoundError, OutputExpiredError

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


@dataclass(eq=False)
class Peer:
    """An SDK client's authenticated connection, with the requests it has in flight."""

    ch: Channel
    client_id: str
    # None for the server token; else the container whose credential it said hello with.
    scope: Scope | None = None
    tasks: set[asyncio.Task[None]] = field(default_factory=set)


# What handles one kind of client message, once it is checked.
ClientHandler = Callable[["CallServer", Peer, Any], None]


def _in_task(answer: Callable[[CallServer, Any], Awaitable[dict[str, Any]]]) -> ClientHandler:
    """The handler of a request whose answer may wait (for a result, for the store): it is
    answered in a task of the connection's, and the answer goes back to its rid."""

    def handle(server: CallServer, peer: Peer, msg: Any) -> None:
        task = asyncio.ensure_future(server._reply(peer.ch, msg, answer(server, msg)))
        peer.tasks.add(task)
        task.add_done_callback(peer.tasks.discard)

    return handle


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
        # (container, message kind) of scoped peers' refusals already in the log.
        self._refusals_logged: set[tuple[str, str]] = set()

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
            admitted = await self._hello(ch)
        finally:
            self.unauthenticated[listener] -= 1
        if admitted is None:
            return
        hello, scope = admitted
        ch.max_frame = self.limits.max_message + _ENVELOPE
        try:
            if hello["role"] == "container":
                await self._container(ch, hello["cid"])
            elif scope is None:
                await self._client(Peer(ch, hello["client_id"]))
            else:
                # Its own namespace of client ids: a container cannot take over the results
                # held for a client outside it by saying hello with that client's id.
                await self._client(Peer(ch, f"{scope.container_id}/{hello['client_id']}", scope))
        except ChannelClosed:
            pass
        finally:
            ch.close()

    async def _hello(
        self, ch: Channel
    ) -> tuple[m.ClientHello | m.ContainerHello, Scope | None] | None:
        """The peer's checked hello and the scope of its credential (None for the server
        token), or None once the connection is closed."""
        try:
            batch = await asyncio.wait_for(ch.recv(), self.limits.hello_timeout)
        except (TimeoutError, ChannelClosed):
            ch.close()
            return None
        hello = messages.check_hello(batch)
        if hello is None:
            ch.close()
            return None
        if hmac.compare_digest(hello["token"].encode(), self.token.encode()):
            return hello, None
        scope = self.scheduler.credentials.lookup(hello["token"])
        reason = "bad token" if scope is None else None
        if (
            scope is not None
            and hello["role"] == "container"
            and hello["cid"] != scope.container_id
        ):
            reason = "the credential is another container's"
        if reason is not None:
            denied: m.Denied = {"t": m.DENIED, "reason": reason}
            ch.send(denied)
            await asyncio.sleep(0)
            ch.close()
            return None
        return hello, scope

    async def _container(self, ch: Channel, cid: str) -> None:
        init = self.scheduler.container_hello(cid, ch)
        if init is None:
            stop: m.Stop = {"t": m.STOP}
            ch.send(stop)
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

    async def _client(self, peer: Peer) -> None:
        sched, ch = self.scheduler, peer.ch
        sched.client_connected(peer.client_id, ch)
        welcome: m.Welcome = {"t": m.WELCOME, "max_message": self.limits.max_message}
        ch.send(welcome)
        sched._flush_undelivered(peer.client_id)
        try:
            while True:
                self._client_frame(peer, await ch.recv())
        finally:
            sched.client_disconnected(peer.client_id, ch)
            self.logs.unsubscribe_all(ch)
            self.objects.disconnected(ch)
            for task in peer.tasks:
                task.cancel()
            for app_id in self.leases.pop(ch, set()):
                # An ephemeral app lives as long as the connection of the command that made it.
                with contextlib.suppress(Error):
                    self.apps.stop(app_id)

    def _client_frame(self, peer: Peer, batch: list[dict[str, Any]]) -> None:
        handlers = self.CLIENT_HANDLERS
        scope = peer.scope
        if scope is not None and not self.scheduler.credentials.live(scope):
            # Its container is gone (the credential with it); something it left behind
            # keeps nothing of its rights.
            peer.ch.close()
            raise ChannelClosed("the container's credential was revoked")
        for raw in batch:
            try:
                msg = messages.check_client(raw)
            except messages.BadMessage as exc:
                log.warning("client %s: %s", peer.client_id, exc)
                _answer_bad(peer.ch, raw, exc)
                continue
            refused = None if scope is None else self._refusal(scope, msg)
            if refused is not None:
                self._refuse(peer, msg, refused)
                continue
            try:
                handlers[msg["t"]](self, peer, msg)
            except Exception:  # a bug here must not cut the client off
                log.exception("client %s: a %r message failed", peer.client_id, msg["t"])

    # -- what a scoped peer may send -------------------------------------------------------
    # A container's SDK holds its container's credential, not the server token. It reaches
    # its own environment and nothing else; each kind of client message, decided:
    #   call, spawn  the function must be of its environment (and an input it re-attaches
    #                to, a function's of its environment); with_options(secrets=...) may
    #                name secrets of its environment only
    #   get, cancel  the call must be of a function of its environment
    #   lookup       in its environment only
    #   obj          Dicts and Queues of its environment only
    #   logs         of its own app only
    #   lease        never: ephemeral apps belong to the command that made them
    #   ping         always
    def _refusal(self, scope: Scope, msg: Any) -> str | None:
        """Why a scoped peer may not send `msg`, or None when it may."""
        env, t = scope.environment, msg["t"]
        if t in (m.CALL, m.SPAWN):
            fdef = self.scheduler.functions.get(msg["fid"])
            running = self.scheduler.inputs.get(msg["iid"])
            if running is not None and running.function.environment != env:
                return f"input {msg['iid']} is of another environment"
            if fdef is not None and fdef.environment != env:
                return f"function {fdef.tag!r} is in environment {fdef.environment!r}"
            for secret in (msg["req"].get("options") or {}).get("secrets") or ():
                named = secret.get("environment") if secret.get("kind") == "named" else None
                if named is not None and named != env:
                    return f"secret {secret.get('name')!r} is in environment {named!r}"
        elif t in (m.GET, m.CANCEL):
            other = self._call_environment(msg["call_id"])
            if other is not None and other != env:
                return f"call {msg['call_id']} is of environment {other!r}"
        elif t == m.LOOKUP:
            if msg["environment"] != env:
                return f"a lookup in environment {msg['environment']!r}"
        elif t == m.OBJ:
            other = self.objects.environment_of(msg)
            if other is not None and other != env:
                return f"a Dict or Queue of environment {other!r}"
        elif t == m.LOGS:
            if msg["app_id"] != scope.app_id:
                return f"the logs of app {msg['app_id']}, which is not its own"
        elif t == m.LEASE:
            return "holding an app (only the command that runs an app may)"
        return None

    def _call_environment(self, call_id: str) -> str | None:
        """The environment of a call (running, or a spawned call's record); None when there
        is no such call (answered as ever: not found, or nothing to cancel)."""
        inp = self.scheduler.inputs.get(call_id)
        if inp is not None:
            return inp.function.environment
        row = self.scheduler.store.get_call(call_id)
        if row is None:
            return None
        app = self.apps.apps.get(row["app_id"])
        if app is not None:
            return str(app["environment"])
        # An app no longer running: its record says; none at all refuses, not allows.
        return self.scheduler.store.app_environment(row["app_id"]) or ""

    def _refuse(self, peer: Peer, msg: Any, why: str) -> None:
        """Tell a scoped peer what it may not do, where it waits for an answer."""
        ch, scope = peer.ch, peer.scope
        assert scope is not None
        text = (
            f"refused: {msg['t']} by container {scope.container_id}, whose credential reaches "
            f"environment {scope.environment!r} only: {why}"
        )
        if (scope.container_id, msg["t"]) not in self._refusals_logged:
            # Once per container and kind: a loop in user code must not flood the server log.
            if len(self._refusals_logged) > 10_000:
                self._refusals_logged.clear()
            self._refusals_logged.add((scope.container_id, msg["t"]))
            log.warning("%s", text)
        error = error_payload(AuthError(text))
        rid = msg.get("rid")
        if rid is not None:
            ch.send({"t": m.REPLY, "rid": rid, "ok": False, "error": error})
        elif msg["t"] == m.CALL:
            ch.send({"t": m.RES, "iid": msg["iid"], "ok": False, "payload": None, "error": error})
        elif msg["t"] == m.LOGS:
            # A subscription has no reply: the refusal comes as its one line.
            line: m.Log = {
                "t": m.LOG,
                "app_id": msg["app_id"],
                "function": "-",
                "container": "-",
                "stream": "system",
                "line": text,
                "ts": time.time(),
            }
            ch.send(line)

    # -- client messages, by kind ---------------------------------------------------------
    def _on_call(self, peer: Peer, msg: m.Call) -> None:
        req: Any = msg["req"]  # the scheduler types a request as a plain dict
        self.scheduler.submit(msg["fid"], msg["iid"], req, msg["kind"], peer.client_id)

    def _on_obj(self, peer: Peer, msg: m.Obj) -> None:
        self.objects.handle(peer.ch, msg)

    def _on_logs(self, peer: Peer, msg: m.Logs) -> None:
        self.logs.subscribe(msg["app_id"], peer.ch)

    def _on_lease(self, peer: Peer, msg: m.Lease) -> None:
        self.leases.setdefault(peer.ch, set()).add(msg["app_id"])

    def _on_ping(self, peer: Peer, msg: m.Ping) -> None:
        pong: m.Pong = {"t": m.PONG, "rid": msg.get("rid")}
        peer.ch.send(pong)

    async def _spawn(self, msg: m.Spawn) -> dict[str, Any]:
        req: Any = msg["req"]
        self.scheduler.spawn(msg["fid"], msg["iid"], req)
        return {"ok": True}

    async def _lookup(self, msg: m.Lookup) -> dict[str, Any]:
        info = self.apps.lookup(msg["environment"], msg["app"], msg["name"])
        return {"ok": True, "info": info}

    async def _cancel(self, msg: m.Cancel) -> dict[str, Any]:
        return {"ok": True, "cancelled": self.scheduler.cancel_call(msg["call_id"])}

    async def _get(self, msg: m.Get) -> dict[str, Any]:
        row = await self.scheduler.wait_call(msg["call_id"], msg.get("timeout"))
        if row is None:
            raise NotFoundError(f"no function call with id {msg['call_id']!r}")
        if row["status"] == "pending":
            return {"ok": True, "pending": True}
        if row["status"] == "expired" or row["result"] is None:
            raise OutputExpiredError(f"the result of {msg['call_id']} has expired")
        # The server's own record of the result (scheduler._finish); the payload in it
        # stays opaque bytes.
        record = pickle.loads(row["result"])
        return {"ok": True, "pending": False, "result": record}

    CLIENT_HANDLERS: ClassVar[dict[str, ClientHandler]] = {
        m.CALL: _on_call,
        m.SPAWN: _in_task(_spawn),
        m.GET: _in_task(_get),
        m.LOOKUP: _in_task(_lookup),
        m.CANCEL: _in_task(_cancel),
        m.OBJ: _on_obj,
        m.LOGS: _on_logs,
        m.LEASE: _on_lease,
        m.PING: _on_ping,
    }

    async def _reply(self, ch: Channel, msg: Any, answer: Awaitable[dict[str, Any]]) -> None:
        rid = msg.get("rid")
        try:
            reply = await answer
        except Error as exc:
            reply = {"ok": False, "error": error_payload(exc)}
        except Exception as exc:  # never let one bad request take the connection down
            log.exception("request failed")
            reply = {"ok": False, "error": error_payload(exc)}
        if rid is not None:
            ch.send({"t": m.REPLY, "rid": rid, **reply})


def _answer_bad(ch: Channel, raw: dict[str, Any], exc: messages.BadMessage) -> None:
    """Tell the sender of a malformed message, when it waits for an answer to it."""
    error = error_payload(InvalidError(str(exc)))
    rid = raw.get("rid")
    if isinstance(rid, int) and not isinstance(rid, bool):
        ch.send({"t": m.REPLY, "rid": rid, "ok": False, "error": error})
    elif raw.get("t") == m.CALL and isinstance(raw.get("iid"), str):
        ch.send({"t": m.RES, "iid": raw["iid"], "ok": False, "payload": None, "error": error})
