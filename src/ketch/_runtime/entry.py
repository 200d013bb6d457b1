"""The container runtime: connect back to the server, load the user's code, run inputs."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import contextvars
import functools
import inspect
import os
import signal
import sys
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, cast

from ketch import _current as current
from ketch._runtime import direct
from ketch._runtime.loader import Preloaded, Target, add_sys_path
from ketch._utils import payload, tracecontext
from ketch._utils.protocol import messages as m
from ketch._utils.protocol.container import ContainerFunction, ContainerWeb
from ketch._utils.threadwire import open_thread_channel
from ketch._utils.wire import (
    Channel,
    ChannelClosed,
    MessageTooLarge,
    heap_sized_reads,
)


class Runtime:
    def __init__(self, channel: Channel, init: m.Init, preloaded: Preloaded | None = None) -> None:
        self.ch = channel
        self.init = init
        # Code a fork-server template loaded before this process was forked from it.
        self.preloaded = preloaded
        # Decoded once, here: the rest of the runtime reads it as attributes.
        self.spec = ContainerFunction.from_wire(init["function"])
        self.pool: concurrent.futures.Executor
        if self.spec.max_inputs <= 1:
            # One input at a time: sync calls run there with no thread hop (direct.py).
            self.pool = direct.InputThread()
        else:
            self.pool = concurrent.futures.ThreadPoolExecutor(
                max_workers=self.spec.max_inputs, thread_name_prefix="ketch-input"
            )
        # Sync calls handed to the input thread and not started yet, and counts of those
        # handed over (written by the loop) and finished (by the thread): direct.py.
        self.direct_waiting: dict[str, m.Input] = {}
        self.direct_posted = 0
        self.direct_done = 0
        self.tasks: dict[str, asyncio.Task[None]] = {}
        self.helpers: list[asyncio.Future[Any]] = []  # agents started for the server
        self.sync_running: set[str] = set()
        self.sync_gens: set[str] = set()
        self.batches: dict[str, Any] = {}  # iid -> its @batched batch (see batch.py)
        # Inputs run as tasks that hold one of the function's max_inputs slots, and those
        # the server sent ahead of a free slot (its prefetch window), waiting in order.
        self.running: set[str] = set()
        self.waiting: dict[str, m.Input] = {}
        self.target: Target | None = None
        self.stopping = asyncio.Event()
        self.web_server: Any = None

    async def start(self) -> bool:
        loop = asyncio.get_running_loop()
        try:
            add_sys_path(self.init.get("sys_path", []))
            # Before the user's module is imported: a module with endpoints may import
            # fastapi or pydantic at its top, as Modal's web examples do, and so its
            # plain functions' containers need them too. The server sends the path only
            # to containers of apps with web endpoints (launch.web_runtime_for).
            self._add_web_runtime()
            from ketch import functions

            # Every function of an app sees its app's endpoints (`get_web_url()`).
            functions.CONTAINER_WEB_URLS.update(self.init.get("web_urls") or {})
            from ketch.compat.shim import install_modal_alias

            install_modal_alias()
            pre = self.preloaded
            params = self.init.get("params")
            if pre is not None and pre.serves(self.spec, params):
                target = pre.target
                await loop.run_in_executor(self.pool, target.instantiate, params)
                hooks = target.enter(snap=False) if pre.snapped else target.enter()
            else:
                target = await loop.run_in_executor(self.pool, Target, self.spec, params)
                hooks = target.enter()
            for hook in hooks:
                result = await loop.run_in_executor(self.pool, hook)
                if inspect.isawaitable(result):
                    await result
            self.target = target
            ready: m.Ready = {"t": m.READY}
            if self.spec.web is not None:
                ready["web_addr"] = await self._start_web(target, self.spec.web)
        except BaseException as exc:
            module = sys.modules.get(self.spec.module or "")
            failed: m.StartupFailed = {
                "t": m.STARTUP_FAILED,
                "error": payload.exception_payload(exc, module),
            }
            await self.ch.send_and_drain(failed)
            return False
        await self.ch.send_and_drain(ready)
        return True

    async def _start_web(self, target: Target, web: ContainerWeb) -> str:
        """Serve the web function; returns the address the gateway forwards to."""
        from ketch._runtime import web as webmod

        loop = asyncio.get_running_loop()
        fn = target.resolve(self.init.get("web_method"))
        if web.type == "web_server":
            # The function may return once its server runs, or serve from it: traffic
            # flows once the port accepts, either way.
            started = loop.run_in_executor(self.pool, fn)
            port = web.port
            host = await webmod.wait_for_port(port, web.startup_timeout, started)
            # The port is in this container's network namespace: a unix socket, reachable
            # from the host's filesystem, brings the gateway's connections to it.
            self.web_server = await webmod.PortBridge.start(self.init["web_socket"], host, port)
            return f"unix:{self.init['web_socket']}"
        max_inputs = self.spec.max_inputs
        app = await loop.run_in_executor(self.pool, webmod.build_app, fn, web, max_inputs)
        path = self.init["web_socket"]
        server = webmod.WebServer(app, path, lifespan=web.type == "asgi")
        await server.start()
        self.web_server = server
        return f"unix:{path}"

    def _add_web_runtime(self) -> None:
        extra = self.init.get("web_runtime")
        if extra and extra not in sys.path:
            sys.path.append(extra)  # after the image's site-packages: the user's versions win

    async def serve(self) -> None:
        while not self.stopping.is_set():
            try:
                # One call per frame: no reference to its inputs outlives it here.
                self._handle(await self.ch.recv())
            except ChannelClosed:
                # The server is gone (crashed or killed). Whatever runs here is re-run by the
                # next server, so finishing it would only make a second, orphaned run. The
                # whole process group goes: servers and children the user started too.
                sys.stderr.flush()
                with contextlib.suppress(OSError):
                    os.killpg(os.getpgrp(), signal.SIGKILL)
                os._exit(0)
        if self.tasks:
            await asyncio.wait(list(self.tasks.values()))

    def _handle(self, batch: list[dict[str, Any]]) -> None:
        # The server is trusted once it has answered the hello: its messages are not checked.
        handlers = self.HANDLERS
        for msg in batch:
            handler = handlers.get(msg["t"])
            if handler is not None:
                handler(self, msg)

    # -- server messages, by kind -------------------------------------------------------
    def _on_input(self, msg: m.Input) -> None:
        # Behind an input of the other kind (a task's), a sync call waits its turn here.
        if not self.running and not self.waiting and direct.take(self, msg):
            return
        self._slot_input(msg)

    # -- the prefetch window (server side: _server/prefetch.py) --------------------------
    def _slot_input(self, msg: m.Input) -> None:
        if self.waiting or self._busy() >= self.spec.max_inputs:
            self.waiting[msg["iid"]] = msg
            if self.direct_posted != self.direct_done and isinstance(self.pool, direct.InputThread):
                # The input thread's calls hold the slot: it says when they are done.
                loop = asyncio.get_running_loop()

                def wake() -> None:
                    loop.call_soon_threadsafe(self._start_waiting)

                self.pool.post(wake)
        else:
            self._start_input(msg)

    def _busy(self) -> int:
        """Slots taken: by tasks, and by sync calls handed to the input thread."""
        return len(self.running) + self.direct_posted - self.direct_done

    def _start_input(self, msg: m.Input) -> None:
        iid = msg["iid"]
        self.running.add(iid)
        if msg.get("prefetched"):
            # Its timeout counts from now, not from when the server sent it.
            started: m.Started = {"t": m.STARTED, "iid": iid}
            self.ch.send(started)
        self.tasks[iid] = asyncio.ensure_future(self._in_slot(msg))

    async def _in_slot(self, msg: m.Input) -> None:
        try:
            await self.run_input(msg)
        finally:
            # The next one starts here, so that its Started shares the result's frame.
            self.running.discard(msg["iid"])
            self._start_waiting()

    def _start_waiting(self) -> None:
        # None starts once the container is stopping: the server runs them elsewhere.
        while self.waiting and self._busy() < self.spec.max_inputs:
            if self.stopping.is_set():
                return
            iid = next(iter(self.waiting))
            self._start_input(self.waiting.pop(iid))

    def _on_unqueue(self, msg: m.Unqueue) -> None:
        back = [iid for iid in msg["iids"] if self._take_back(iid)]
        unqueued: m.Unqueued = {"t": m.UNQUEUED, "iids": back}
        self.ch.send(unqueued)

    def _take_back(self, iid: str) -> bool:
        """Whether `iid` was waiting and now never runs here."""
        if self.waiting.pop(iid, None) is not None:
            return True
        return iid in self.direct_waiting and direct.unqueue(self, iid)

    def _on_batch(self, msg: m.Batch) -> None:
        from ketch._runtime import batch as batching

        batching.start(self, msg)

    def _on_cancel(self, msg: m.CancelInput) -> None:
        self.cancel(msg["iid"])

    def _on_stop(self, msg: m.Stop) -> None:
        self.stopping.set()

    def _on_agent(self, msg: m.StartAgent) -> None:
        # A child of this process: in the container's namespaces, limits and process
        # group, so it ends with the container.
        agent = os.path.join(os.path.dirname(os.path.abspath(__file__)), "agent.py")
        self.helpers.append(
            asyncio.ensure_future(
                asyncio.create_subprocess_exec(
                    sys.executable, agent, msg["socket"], stdin=asyncio.subprocess.DEVNULL
                )
            )
        )

    HANDLERS: ClassVar[dict[str, Callable[[Runtime, Any], None]]] = {
        m.INPUT: _on_input,
        m.BATCH: _on_batch,
        m.CANCEL: _on_cancel,
        m.STOP: _on_stop,
        m.AGENT: _on_agent,
        m.UNQUEUE: _on_unqueue,
    }

    def refused(self, msg: Mapping[str, Any], exc: Exception) -> None:
        """An output the channel would not send (over the server's size limit, or not
        encodable): the caller gets an error in its place."""
        iid = msg.get("iid")
        if msg.get("t") not in (m.OUT, m.ITEM) or not isinstance(iid, str):
            print(f"ketch: a {msg.get('t')!r} message was not sent: {exc}", file=sys.stderr)
            return
        from ketch.exception import RequestSizeError

        what = "result" if msg["t"] == m.OUT else "generator item"
        error: BaseException = exc
        if isinstance(exc, MessageTooLarge):
            error = RequestSizeError(
                f"the {what} is {exc.size} bytes once encoded; the server takes at most "
                f"{exc.limit} (its max_message_bytes, KETCH_MAX_MESSAGE_BYTES)"
            )
        out: m.Out = {
            "t": m.OUT,
            "iid": iid,
            "ok": False,
            "error": payload.exception_payload(error),
        }
        self.ch.send(out)
        if msg["t"] == m.ITEM:
            self.cancel(iid)  # the caller has its answer: the generator stops

    def cancel(self, iid: str) -> None:
        if self.waiting.pop(iid, None) is not None:
            return  # sent ahead of a free slot, it never started
        if iid in self.direct_waiting and direct.unqueue(self, iid):
            return  # it had not started: it never will
        if iid in self.batches:
            from ketch._runtime import batch as batching

            batching.cancel(self, iid)
            return
        if iid in self.sync_gens:
            # A sync generator stops at its next item: the task stops asking for items.
            task = self.tasks.get(iid)
            if task is not None:
                task.cancel()
            return
        if iid in self.sync_running:
            # Threads cannot be interrupted: the server replaces this container instead.
            stuck: m.Stuck = {"t": m.STUCK, "iid": iid}
            self.ch.send(stuck)
            return
        task = self.tasks.get(iid)
        if task is not None:
            task.cancel()

    async def run_input(self, msg: m.Input) -> None:
        iid = msg["iid"]
        assert self.target is not None
        loop = asyncio.get_running_loop()
        try:
            args, kwargs = payload.loads(msg["args"])
            fn = self.target.resolve(msg.get("method"))
            # The call's trace context (O5), set in this input's task and handed to its
            # thread, so that user code using OpenTelemetry joins the caller's trace.
            if msg.get("traceparent"):
                tracecontext.attach(msg["traceparent"])
            # This task's own context: inputs running at once each see their own ids.
            current.INPUT_ID.set(iid)
            current.CALL_ID.set(msg.get("call_id"))
            if msg["kind"] == "gen":
                await self._run_gen(iid, fn, args, kwargs)
                out: m.Out = {"t": m.OUT, "iid": iid, "ok": True, "payload": None}
            else:
                if inspect.iscoroutinefunction(fn):
                    result = await fn(*args, **kwargs)
                else:
                    self.sync_running.add(iid)
                    # The pool's threads do not inherit the task's context on their own.
                    call = functools.partial(
                        contextvars.copy_context().run, functools.partial(fn, *args, **kwargs)
                    )
                    try:
                        result = await loop.run_in_executor(self.pool, call)
                    finally:
                        self.sync_running.discard(iid)
                    if inspect.isawaitable(result):
                        result = await result
                out = {"t": m.OUT, "iid": iid, "ok": True, "payload": payload.dumps(result)}
        except asyncio.CancelledError:
            return  # the server has already answered the caller (timeout or cancel)
        except BaseException as exc:
            out = {"t": m.OUT, "iid": iid, "ok": False, "error": self._error(exc)}
        finally:
            self.tasks.pop(iid, None)
        self.ch.send(out)

    async def _run_gen(self, iid: str, fn: Any, args: Any, kwargs: Any) -> None:
        loop = asyncio.get_running_loop()
        gen = fn(*args, **kwargs)
        if inspect.isasyncgen(gen):
            async for item in gen:
                msg: m.Item = {"t": m.ITEM, "iid": iid, "payload": payload.dumps(item)}
                self.ch.send(msg)
            return
        done = object()
        self.sync_gens.add(iid)
        # One context for every step of the generator, as one thread running it would have.
        ctx = contextvars.copy_context()
        try:
            while True:
                step = functools.partial(ctx.run, next, gen, done)
                item = await loop.run_in_executor(self.pool, step)
                if item is done:
                    return
                msg = {"t": m.ITEM, "iid": iid, "payload": payload.dumps(item)}
                self.ch.send(msg)
        finally:
            self.sync_gens.discard(iid)

    def _error(self, exc: BaseException) -> m.ErrorPayload:
        module = self.target.module if self.target is not None else None
        return payload.exception_payload(exc, module)

    async def shutdown(self) -> None:
        await direct.drain(self)
        if self.web_server is not None:
            await self.web_server.stop()  # runs the app's lifespan shutdown
        if self.target is not None:
            for hook in self.target.exit_hooks():
                with contextlib.suppress(Exception):
                    result = hook()
                    if inspect.isawaitable(result):
                        await result
        self.pool.shutdown(wait=False, cancel_futures=True)


async def _connect() -> tuple[Channel, dict[str, Any]]:
    """The channel to the server and the first message it sent. A connection closed before
    that (the server is busy with connections that have not said hello yet) is tried again
    for a while."""
    delay = 0.05
    for attempt in range(8):
        ch = await open_thread_channel(os.environ["KETCH_CALL_ADDR"])
        hello: m.ContainerHello = {
            "t": m.HELLO,
            "role": "container",
            "cid": os.environ["KETCH_CONTAINER_ID"],
            "token": os.environ["KETCH_TOKEN"],
        }
        ch.send(hello)
        try:
            batch = await ch.recv()
        except ChannelClosed:
            if attempt == 7:
                raise
            await asyncio.sleep(delay)
            delay *= 2
            continue
        return ch, batch[0] if batch else {}
    raise AssertionError("unreachable")


async def _main(preloaded: Preloaded | None = None) -> int:
    heap_sized_reads()
    ch, first = await _connect()
    if first.get("t") != m.INIT:
        return 0  # denied, or told to stop before it started
    init = cast("m.Init", first)
    rt = Runtime(ch, init, preloaded)
    limit = init.get("max_message")
    ch.max_message = limit if isinstance(limit, int) else None
    ch.on_refused = rt.refused
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, rt.stopping.set)
    if not await rt.start():
        return 1
    serve = asyncio.ensure_future(rt.serve())
    stop = asyncio.ensure_future(rt.stopping.wait())
    await asyncio.wait([serve, stop], return_when=asyncio.FIRST_COMPLETED)
    if rt.tasks:
        await asyncio.wait(list(rt.tasks.values()))
    await rt.shutdown()
    ch.close()
    return 0


def run_forked(preloaded: Preloaded) -> int:
    """The container's life in a process forked from a template (_runtime/template.py),
    which then leaves with os._exit like `main`."""
    code = asyncio.run(_main(preloaded))
    sys.stdout.flush()
    sys.stderr.flush()
    return code


def main() -> None:
    code = asyncio.run(_main())
    sys.stdout.flush()
    sys.stderr.flush()
    # Skip interpreter teardown: user threads must not keep a finished container alive.
    os._exit(code)
