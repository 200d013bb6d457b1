"""The SDK side of the call protocol: one connection per process, shared by every handle.

Calls in flight survive a dropped connection: on reconnect (starting the server again if
needed) the client re-sends them under the same input ids, and the server runs each once.
A client reconnects at once only while it carries something (calls, requests, leased apps,
log subscriptions); an idle one reconnects on its next use, so that a server someone
stopped on purpose stays stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import threading
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any, ClassVar

from ketch._client.discovery import ServerInfo, ensure_server, from_container_env
from ketch._utils import payload
from ketch._utils.ids import new_id
from ketch._utils.protocol import messages as m
from ketch._utils.threadwire import ThreadWriteChannel, open_thread_channel
from ketch._utils.wire import Channel, ChannelClosed, MessageTooLarge
from ketch.config import Config
from ketch.exception import ConnectionError as KetchConnectionError
from ketch.exception import InvalidError, RequestSizeError

log = logging.getLogger("ketch.client")

# How long a client keeps trying to get back to its server before failing the calls.
RECONNECT_FOR = 120.0
# Hellos tried on one connect when the server closes the connection unheard (about 6 s).
_HELLO_TRIES = 8

# Every open client, referenced until it is closed. A client that is no longer current
# (after Client.reset()) may still carry leased apps and calls in flight; if it were
# collected, its connection would close, and the server stops the ephemeral apps leased on
# a connection when it closes.
_open_clients: set[Client] = set()
_closing: set[asyncio.Task[None]] = set()


class _Pending:
    __slots__ = ("msg", "on_message")

    def __init__(self, msg: Mapping[str, Any], on_message: Callable[[Any], None]) -> None:
        self.msg = msg
        # Gets the call's items and then its result (m.Item, m.Res).
        self.on_message = on_message


class Client:
    _current: Client | None = None

    def __init__(self, config: Config) -> None:
        self.config = config
        self.client_id = new_id("cl")
        self.channel: Channel | None = None
        self.info: ServerInfo | None = None
        self.pending: dict[str, _Pending] = {}
        # A request (a message with a rid) and its reply, a m.Reply with the answer's fields.
        self.requests: dict[int, tuple[dict[str, Any], asyncio.Future[Any]]] = {}
        self.log_subscriptions: dict[str, Callable[[Any], None]] = {}  # gets each m.Log
        self.leases: set[str] = set()
        self._rids = itertools.count(1)
        self._connected = asyncio.Event()
        self._connect_lock = asyncio.Lock()
        self._reader: asyncio.Task[None] | None = None
        self._reconnecting: asyncio.Task[None] | None = None
        self._closed = False
        self.broken: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: threading.Thread | None = None
        _open_clients.add(self)

    @classmethod
    async def current(cls) -> Client:
        """The process-wide client, connected (runs on the SDK loop)."""
        if cls._current is None or cls._current._closed:
            cls._current = Client(Config.load())
        client = cls._current
        if not client._connected.is_set():
            await client.connect()
        return client

    @classmethod
    def reset(cls) -> None:
        """Forget the current client (the next call makes one for the current config).

        The old one is closed once it carries nothing: no leased app, no call in flight.
        """
        old, cls._current = cls._current, None
        if old is not None:
            old._close_if_idle()

    def _idle(self) -> bool:
        return not (self.leases or self.pending or self.requests)

    def _has_work(self) -> bool:
        """Whether anything would be lost without a connection."""
        return not self._idle() or bool(self.log_subscriptions)

    def _close_if_idle(self) -> None:
        if self._closed or self is Client._current or not self._idle():
            return
        from ketch._utils.aio import background_loop

        loop = background_loop()

        def close() -> None:
            if not self._closed and self is not Client._current and self._idle():
                task = asyncio.ensure_future(self.close())
                _closing.add(task)
                task.add_done_callback(_closing.discard)

        loop.call_soon_threadsafe(close)

    async def connect(self) -> None:
        """Connect (starting the server if needed), then send again what the client
        carries: subscriptions, leases, calls and requests not answered yet."""
        async with self._connect_lock:
            if self._connected.is_set():
                return
            await self._open()
            self._resend()

    async def _open(self) -> None:
        info = from_container_env()
        if info is None:
            info = await asyncio.to_thread(ensure_server, self.config)
        delay = 0.05
        for attempt in range(_HELLO_TRIES):
            ch = await open_thread_channel(info.call_addr)
            hello: m.ClientHello = {
                "t": m.HELLO,
                "role": "client",
                "token": info.token,
                "client_id": self.client_id,
            }
            ch.send(hello)
            try:
                batch = await asyncio.wait_for(ch.recv(), 30)
            except (ChannelClosed, ConnectionResetError) as exc:
                # Closed unheard: the server is stopping, or has too many connections
                # waiting for their hello; try again shortly.
                ch.close()
                if attempt == _HELLO_TRIES - 1:
                    raise KetchConnectionError(
                        f"the ketch server closed the connection ({exc})"
                    ) from None
                await asyncio.sleep(delay)
                delay *= 2
                continue
            except BaseException:
                ch.close()
                raise
            break
        reply = batch[0] if batch else {}
        if reply.get("t") != m.WELCOME:
            ch.close()
            raise KetchConnectionError(f"the ketch server refused the connection: {reply}")
        limit = reply.get("max_message")
        ch.max_message = limit if isinstance(limit, int) else None
        ch.on_refused = self._refused
        self.info, self.channel = info, ch
        # The loop this client lives on, and its thread: `call_blocking` runs on others.
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.current_thread()
        self._reader = asyncio.ensure_future(self._read(ch))
        self._connected.set()

    async def _read(self, ch: Channel) -> None:
        try:
            while True:
                # One call per frame: nothing from it (a large result) stays referenced here
                # while the next frame is awaited.
                self._dispatch_all(await ch.recv())
        except ChannelClosed:
            pass
        if self._closed or ch is not self.channel:
            return
        self._connected.clear()
        self.channel = None
        if self._has_work():
            self._start_reconnect()
        # else: idle; the next use connects again (and starts a server if there is none).

    def _dispatch_all(self, batch: list[dict[str, Any]]) -> None:
        # The server is trusted once it has answered the hello: its messages are not checked.
        handlers = self.HANDLERS
        for msg in batch:
            handler = handlers.get(msg["t"])
            if handler is not None:
                handler(self, msg)

    def _start_reconnect(self) -> None:
        if self._closed or (self._reconnecting is not None and not self._reconnecting.done()):
            return
        self._reconnecting = asyncio.ensure_future(self._reconnect())

    # -- server messages, by kind -------------------------------------------------------
    def _on_res(self, msg: m.Res) -> None:
        pending = self.pending.pop(msg["iid"], None)
        if pending is not None:
            pending.on_message(msg)

    def _on_item(self, msg: m.Item) -> None:
        pending = self.pending.get(msg["iid"])
        if pending is not None:
            pending.on_message(msg)

    def _on_reply(self, msg: m.Reply) -> None:
        entry = self.requests.pop(msg["rid"], None)
        if entry is not None and not entry[1].done():
            entry[1].set_result(msg)

    def _on_log(self, msg: m.Log) -> None:
        handler = self.log_subscriptions.get(msg["app_id"])
        if handler is not None:
            handler(msg)

    def _on_pong(self, msg: m.Pong) -> None:
        pass  # the SDK sends no pings; the server answers those of other tools

    HANDLERS: ClassVar[dict[str, Callable[[Client, Any], None]]] = {
        m.RES: _on_res,
        m.ITEM: _on_item,
        m.REPLY: _on_reply,
        m.LOG: _on_log,
        m.PONG: _on_pong,
    }

    async def _reconnect(self) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + RECONNECT_FOR
        delay = 0.05
        while not self._closed and not self._connected.is_set():
            try:
                await self.connect()
            except (OSError, KetchConnectionError, TimeoutError, ChannelClosed) as exc:
                if loop.time() > deadline:
                    self._fail_all(KetchConnectionError(f"lost the ketch server: {exc}"))
                    return
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)

    def _resend(self) -> None:
        assert self.channel is not None
        for app_id in self.log_subscriptions:
            self.channel.send(_logs(app_id))
        for app_id in self.leases:
            self.channel.send(_lease(app_id))
        for pending in list(self.pending.values()):
            self.channel.send(pending.msg)
        for msg, _ in list(self.requests.values()):
            self.channel.send(msg)

    def _refused(self, msg: Mapping[str, Any], exc: Exception) -> None:
        """A message the channel would not send (too large, or not encodable): its call
        or request fails here, with nothing sent."""
        error: Exception = exc
        if isinstance(exc, MessageTooLarge):
            error = RequestSizeError(
                f"the {msg.get('t')!r} message is {exc.size} bytes encoded; the server takes "
                f"at most {exc.limit} (its max_message_bytes, KETCH_MAX_MESSAGE_BYTES)"
            )
        elif not isinstance(exc, KetchConnectionError):
            error = InvalidError(f"the {msg.get('t')!r} message cannot be sent: {exc}")
        iid = msg.get("iid")
        if msg.get("t") == m.CALL and isinstance(iid, str):
            pending = self.pending.pop(iid, None)
            if pending is not None:
                res: m.Res = {
                    "t": m.RES,
                    "iid": iid,
                    "ok": False,
                    "error": None,
                    "local_error": error,
                }
                pending.on_message(res)
            return
        rid = msg.get("rid")
        entry = self.requests.pop(rid, None) if isinstance(rid, int) else None
        if entry is not None and not entry[1].done():
            entry[1].set_exception(error)

    def _fail_all(self, exc: BaseException) -> None:
        self.broken = exc
        err: m.ErrorPayload = {"exc": None, "repr": repr(exc), "tb": ""}
        for iid, pending in list(self.pending.items()):
            del self.pending[iid]
            res: m.Res = {"t": m.RES, "iid": iid, "ok": False, "error": err, "local_error": exc}
            pending.on_message(res)
        for _, fut in self.requests.values():
            if not fut.done():
                fut.set_exception(exc)
        self.requests.clear()

    async def _channel(self) -> Channel:
        while not self._connected.is_set() or self.channel is None:
            if self.broken is not None:
                raise self.broken
            if self._reconnecting is not None and not self._reconnecting.done():
                await asyncio.shield(self._reconnecting)
            else:
                await self.connect()  # idle until now: connect for this use, errors and all
        return self.channel

    # -- operations ---------------------------------------------------------------------
    def send(self, msg: Mapping[str, Any]) -> None:
        if self.channel is not None and self._connected.is_set():
            self.channel.send(msg)
        elif self._has_work() and self.broken is None:
            # Sent again from self.pending / self.requests / the leases once connected; a
            # message that is none of those (a cancel) has nothing left to act on.
            self._start_reconnect()

    async def request(self, msg: dict[str, Any]) -> dict[str, Any]:
        """A request/reply exchange (spawn, get, lookup, cancel); raises remote errors."""
        await self._channel()
        rid = next(self._rids)
        msg = {**msg, "rid": rid}
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.requests[rid] = (msg, fut)
        self.send(msg)
        try:
            reply = await fut
        finally:
            self.requests.pop(rid, None)
        if not reply.get("ok"):
            raise payload.rebuild_exception(reply["error"])
        return reply

    def submit(
        self,
        fid: str,
        req: dict[str, Any],
        kind: str,
        on_message: Callable[[dict[str, Any]], None],
        iid: str | None = None,
    ) -> str:
        iid = iid or new_id("in")
        msg = {"t": m.CALL, "iid": iid, "fid": fid, "req": req, "kind": kind}
        self.pending[iid] = _Pending(msg, on_message)
        self.send(msg)
        return iid

    async def call(self, fid: str, req: dict[str, Any]) -> Any:
        await self._channel()
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()

        def done(msg: dict[str, Any]) -> None:
            if not fut.done():
                fut.set_result(msg)

        self.submit(fid, req, "call", done)
        return result_of(await fut)

    def ready_for_blocking(self) -> bool:
        """Whether `call_blocking` may be used now: connected, and not on the SDK loop."""
        return (
            self._connected.is_set()
            and isinstance(self.channel, ThreadWriteChannel)
            and not self._closed
            and self.broken is None
            and self._loop is not None
            and threading.current_thread() is not self._loop_thread
        )

    def call_blocking(self, fid: str, req: dict[str, Any]) -> Any:
        """`call`, from a thread other than the SDK loop's (after `ready_for_blocking`): the
        caller's thread sends the call itself and sleeps on a lock that the loop's reader
        releases with the result, so the loop is woken by the answer only. A call that
        cannot be written at once (the connection is busy or gone) is sent by the loop, and
        one in flight when the connection drops is sent again on reconnect, as `call`'s."""
        loop = self._loop
        assert loop is not None
        answered = threading.Lock()
        answered.acquire()
        box: list[dict[str, Any]] = []

        def done(msg: dict[str, Any]) -> None:
            # Runs once, on the loop: the pending entry is popped before it is called.
            box.append(msg)
            answered.release()

        iid = new_id("in")
        msg = {"t": m.CALL, "iid": iid, "fid": fid, "req": req, "kind": "call"}
        self.pending[iid] = _Pending(msg, done)
        ch = self.channel
        if not isinstance(ch, ThreadWriteChannel) or not ch.write_now(msg):
            loop.call_soon_threadsafe(self.send, msg)
        try:
            answered.acquire()
        except KeyboardInterrupt:
            loop.call_soon_threadsafe(self.pending.pop, iid, None)
            raise
        return result_of(box[0])

    async def call_gen(self, fid: str, req: dict[str, Any]) -> AsyncIterator[Any]:
        await self._channel()
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        iid = self.submit(fid, req, "gen", queue.put_nowait)
        finished = False
        try:
            while True:
                msg = await queue.get()
                if msg["t"] == m.ITEM:
                    yield payload.loads(msg["payload"])
                else:
                    finished = True
                    result_of(msg)
                    return
        finally:
            self.pending.pop(iid, None)
            if not finished:
                # The caller stopped iterating: stop the generator in its container too.
                cancel: m.Cancel = {"t": m.CANCEL, "call_id": iid, "rid": None}
                self.send(cancel)

    def subscribe_logs(self, app_id: str, handler: Callable[[dict[str, Any]], None]) -> None:
        self.log_subscriptions[app_id] = handler
        self.send(_logs(app_id))

    def lease(self, app_id: str) -> None:
        self.leases.add(app_id)
        self.send(_lease(app_id))

    def release(self, app_id: str) -> None:
        # The lease may sit on an older client than the one releasing it.
        for client in list(_open_clients):
            if app_id in client.leases or app_id in client.log_subscriptions:
                client.leases.discard(app_id)
                client.log_subscriptions.pop(app_id, None)
                client._close_if_idle()

    async def close(self) -> None:
        self._closed = True
        _open_clients.discard(self)
        if self.channel is not None:
            self.channel.close()
        for task in (self._reader, self._reconnecting):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task


def _logs(app_id: str) -> m.Logs:
    return {"t": m.LOGS, "app_id": app_id}


def _lease(app_id: str) -> m.Lease:
    return {"t": m.LEASE, "app_id": app_id}


def result_of(msg: Mapping[str, Any]) -> Any:
    """The value of a 'res' message, or its exception raised with the original type."""
    if msg.get("ok"):
        data = msg.get("payload")
        return None if data is None else payload.loads(data)
    local = msg.get("local_error")
    if local is not None:
        raise local
    raise payload.rebuild_exception(msg["error"])
