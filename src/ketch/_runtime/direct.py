"""The input thread of a container that runs one input at a time (`max_inputs == 1`).

Such a container has exactly one thread for user code, as a one-worker pool would give it
(so thread-locals an `@enter` hook sets are there for every input), and a sync call's input
skips the executor's machinery both ways: the loop hands the message to the thread with one
queue put, and the thread writes the result on the socket itself, so the loop is not woken
to send it. The loop keeps reading the channel meanwhile, so a cancel or a timeout of the
running input is answered at once (`"stuck"`: the server replaces the container, T3).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import inspect
import queue
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ketch import _current as current
from ketch._utils import payload, tracecontext
from ketch._utils.protocol import messages as m
from ketch._utils.threadwire import ThreadWriteChannel

if TYPE_CHECKING:
    from ketch._runtime.entry import Runtime


class InputThread(concurrent.futures.Executor):
    """One worker thread: an executor for the runtime's hooks and generator steps, and the
    place where sync calls run with no future at all (`post`)."""

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._closed = False
        # The name a one-worker ThreadPoolExecutor with this prefix gives its thread.
        self.thread = threading.Thread(target=self._work, name="ketch-input_0", daemon=True)
        self.thread.start()

    def submit(
        self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any
    ) -> concurrent.futures.Future[Any]:
        if self._closed:
            raise RuntimeError("cannot schedule new futures after shutdown")
        fut: concurrent.futures.Future[Any] = concurrent.futures.Future()
        self._queue.put((fut, fn, args, kwargs))
        return fut

    def post(self, fn: Callable[[], None]) -> None:
        """Run `fn` on the thread after what is queued; it handles its own errors."""
        self._queue.put((None, fn, (), {}))

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        self._closed = True
        if cancel_futures:
            while True:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is not None and item[0] is not None:
                    item[0].cancel()
        self._queue.put(None)
        if wait and threading.current_thread() is not self.thread:
            self.thread.join()

    def _work(self) -> None:
        get = self._queue.get
        while True:
            item = get()
            if item is None:
                return
            fut, fn, args, kwargs = item
            del item
            if fut is None:
                fn()
            elif fut.set_running_or_notify_cancel():
                try:
                    result = fn(*args, **kwargs)
                except BaseException as exc:
                    fut.set_exception(exc)
                    del exc  # no cycle through the traceback's frame
                else:
                    fut.set_result(result)
                    del result
            del fut, fn, args, kwargs


def take(rt: Runtime, msg: m.Input) -> bool:
    """Run `msg` on the input thread if it is a sync call (the loop's side); False leaves
    it to the usual task."""
    pool = rt.pool
    if not isinstance(pool, InputThread) or msg["kind"] != "call" or rt.target is None:
        return False
    try:
        fn = rt.target.resolve(msg.get("method"))
    except Exception:
        return False  # the task reports it
    if inspect.iscoroutinefunction(fn) or not isinstance(rt.ch, ThreadWriteChannel):
        return False
    rt.direct_waiting[msg["iid"]] = msg
    rt.direct_posted += 1
    ctx = contextvars.copy_context()
    loop = asyncio.get_running_loop()
    pool.post(lambda: ctx.run(_run, rt, loop, msg, fn))
    return True


def unqueue(rt: Runtime, iid: str) -> bool:
    """Take back an input handed to the thread that has not started (the loop's side):
    True if it will not run."""
    return rt.direct_waiting.pop(iid, None) is not None


def _run(rt: Runtime, loop: asyncio.AbstractEventLoop, msg: m.Input, fn: Any) -> None:
    """One sync call on the input thread, in its own copy of the loop's context."""
    iid = msg["iid"]
    ch = rt.ch
    assert isinstance(ch, ThreadWriteChannel)
    # In this order: a cancel that finds the input in neither place cannot happen, and one
    # that takes it out of `direct_waiting` first means it never runs.
    rt.sync_running.add(iid)
    if rt.direct_waiting.pop(iid, None) is None:
        rt.sync_running.discard(iid)
        rt.direct_done += 1
        return
    try:
        _call(rt, loop, ch, msg, fn)
    finally:
        # After its answer is written (or handed to the loop): `drain` waits for this.
        rt.direct_done += 1


def _call(
    rt: Runtime, loop: asyncio.AbstractEventLoop, ch: ThreadWriteChannel, msg: m.Input, fn: Any
) -> None:
    iid = msg["iid"]
    if msg.get("prefetched"):
        started: m.Started = {"t": m.STARTED, "iid": iid}
        ch.send_now(loop, started)
    try:
        try:
            args, kwargs = payload.loads(msg["args"])
            if msg.get("traceparent"):
                tracecontext.attach(msg["traceparent"])
            current.INPUT_ID.set(iid)
            current.CALL_ID.set(msg.get("call_id"))
            result = fn(*args, **kwargs)
        finally:
            rt.sync_running.discard(iid)  # before its answer: a later cancel is a no-op
        if inspect.isawaitable(result):
            # A sync function that returned a coroutine: the loop awaits it, as a task.
            loop.call_soon_threadsafe(_await_on_loop, rt, iid, result)
            return
        out: m.Out = {"t": m.OUT, "iid": iid, "ok": True, "payload": payload.dumps(result)}
    except BaseException as exc:
        out = {"t": m.OUT, "iid": iid, "ok": False, "error": rt._error(exc)}
    ch.send_now(loop, out)


def _await_on_loop(rt: Runtime, iid: str, aw: Any) -> None:
    async def finish() -> None:
        try:
            out: m.Out = {"t": m.OUT, "iid": iid, "ok": True, "payload": payload.dumps(await aw)}
        except asyncio.CancelledError:
            return  # the server has already answered the caller
        except BaseException as exc:
            out = {"t": m.OUT, "iid": iid, "ok": False, "error": rt._error(exc)}
        finally:
            rt.tasks.pop(iid, None)
        rt.ch.send(out)

    rt.tasks[iid] = asyncio.ensure_future(finish())


async def drain(rt: Runtime) -> None:
    """Wait until the sync calls handed to the input thread have finished (and their
    answers are on their way); the thread takes work in order."""
    # Each count is written by one thread only: the loop posts, the input thread finishes.
    if isinstance(rt.pool, InputThread) and rt.direct_posted != rt.direct_done:
        await asyncio.get_running_loop().run_in_executor(rt.pool, _nothing)
    # An answer the thread handed to the loop (`send_now`) is queued by now: into the
    # channel's outbox with it, which closing the channel flushes.
    await asyncio.sleep(0)


def _nothing() -> None:
    pass
