"""Fakes that drive the real `Scheduler` without processes, sockets or real time: a manual
clock, a backend whose containers the test makes connect, speak and exit, and channels that
record what the scheduler sends."""

from __future__ import annotations

import asyncio
import heapq
import itertools
import pickle
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar, cast

from ketch._backends.base import (
    EXITED,
    KILLED,
    Backend,
    Capacity,
    ContainerHandle,
    ContainerSpec,
    LogSink,
)
from ketch._server.images import BuiltImage
from ketch._server.model import FunctionDef, Pool
from ketch._server.scheduler import Scheduler
from ketch._utils.protocol import messages as m
from ketch._utils.protocol.spec import ImageSpec, OptionsSpec, RetriesSpec, StoredFunction
from ketch._utils.wire import Channel

T = TypeVar("T")

# Loop turns that `settle` gives pending callbacks and tasks: the scheduler's chains
# (call_soon reconcile -> spawned start -> backend.start -> wait) are a few turns deep.
_SETTLE_TURNS = 30


async def settle() -> None:
    """Let every callback and task that is ready run, as the event loop would between
    two network events."""
    for _ in range(_SETTLE_TURNS):
        await asyncio.sleep(0)


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run one test body in a fresh event loop (no asyncio plugin for pytest here)."""
    return asyncio.run(coro)


# -- time ----------------------------------------------------------------------------------
class FakeTimer:
    def __init__(self, when: float, callback: Callable[..., object], args: tuple[Any, ...]):
        self.when = when
        self.callback = callback
        self.args = args
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class FakeClock:
    """Time that moves only when the test says so. Timers run in time order while it
    advances, including timers that earlier ones set."""

    def __init__(self, start: float = 1000.0, wall_offset: float = 1.7e9) -> None:
        self.now = start
        self.wall_offset = wall_offset
        self._timers: list[tuple[float, int, FakeTimer]] = []
        self._seq = itertools.count()

    def monotonic(self) -> float:
        return self.now

    def time(self) -> float:
        return self.now + self.wall_offset

    def call_later(self, delay: float, callback: Callable[..., object], *args: Any) -> FakeTimer:
        timer = FakeTimer(self.now + max(0.0, delay), callback, args)
        heapq.heappush(self._timers, (timer.when, next(self._seq), timer))
        return timer

    def pending(self) -> list[FakeTimer]:
        """Timers not yet run nor cancelled, soonest first."""
        return [t for _, _, t in sorted(self._timers) if not t.cancelled]

    async def advance(self, dt: float) -> None:
        """Move time forward by `dt`, running each timer due on the way at its own time,
        and letting the loop settle after each (what a timer starts may set new timers)."""
        target = self.now + dt
        await settle()
        while self._timers and self._timers[0][0] <= target:
            when, _, timer = heapq.heappop(self._timers)
            if timer.cancelled:
                continue
            self.now = max(self.now, when)
            timer.callback(*timer.args)
            await settle()
        self.now = target
        await settle()


# -- channels ------------------------------------------------------------------------------
class FakeChannel:
    """Stands in for `wire.Channel`: what is sent is kept in `sent`."""

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []
        self.closed = False

    def send(self, msg: Any) -> None:
        self.sent.append(dict(msg))

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [msg for msg in self.sent if msg.get("t") == kind]

    def as_channel(self) -> Channel:
        # The scheduler only calls send() and reads closed.
        return cast("Channel", self)


# -- containers ----------------------------------------------------------------------------
class FakeHandle(ContainerHandle):
    """One container's process: it exits when stopped, killed, or told to by the test."""

    def __init__(self, container_id: str) -> None:
        self.container_id = container_id
        self.stops: list[float] = []  # the grace of each stop asked for
        self.killed = False
        self._exit: asyncio.Future[tuple[str, int | None]] = (
            asyncio.get_running_loop().create_future()
        )

    async def stop(self, grace: float) -> None:
        self.stops.append(grace)
        self.exit(0)

    async def wait(self) -> tuple[str, int | None]:
        return await self._exit

    def kill(self) -> None:
        self.killed = True
        self.exit(-9, KILLED)

    def exit(self, code: int | None, reason: str = EXITED) -> None:
        if not self._exit.done():
            self._exit.set_result((reason, code))

    @property
    def exited(self) -> bool:
        return self._exit.done()


class FakeContainer:
    """The test's side of one launched container: it connects and says what a real
    runtime would."""

    def __init__(self, backend: FakeBackend, spec: ContainerSpec, handle: FakeHandle) -> None:
        self.backend = backend
        self.spec = spec
        self.handle = handle
        self.cid = spec.container_id
        self.channel = FakeChannel()
        self.init: dict[str, Any] | None = None

    @property
    def sched(self) -> Scheduler:
        assert self.backend.scheduler is not None, "FakeBackend.scheduler is not set"
        return self.backend.scheduler

    def connect(self) -> dict[str, Any] | None:
        self.init = self.sched.container_hello(self.cid, self.channel.as_channel())
        return self.init

    def say(self, msg: dict[str, Any]) -> None:
        self.sched.container_message(self.cid, msg)

    def ready(self) -> None:
        """Connect (if not yet) and say READY."""
        if self.init is None:
            assert self.connect() is not None, f"{self.cid} was not expected"
        self.say({"t": m.READY})

    def out(self, iid: str, ok: bool = True, payload: bytes | None = b"r") -> None:
        error = None if ok else {"exc": None, "repr": "ValueError('boom')", "tb": ""}
        self.say({"t": m.OUT, "iid": iid, "ok": ok, "payload": payload, "error": error})

    def startup_failed(self, message: str = "import failed") -> None:
        if self.init is None:
            self.connect()
        error = {"exc": None, "repr": f"ImportError({message!r})", "tb": ""}
        self.say({"t": m.STARTUP_FAILED, "error": error})

    def stuck(self, iid: str) -> None:
        self.say({"t": m.STUCK, "iid": iid})

    def exit(self, code: int | None = 0, reason: str = EXITED) -> None:
        self.handle.exit(code, reason)

    def crash(self, code: int = 1) -> None:
        self.handle.exit(code, EXITED)

    def inputs(self) -> list[str]:
        """Ids of the inputs sent to it, in order."""
        return [msg["iid"] for msg in self.channel.of_kind(m.INPUT)]

    def batches(self) -> list[list[str]]:
        return [[i["iid"] for i in msg["inputs"]] for msg in self.channel.of_kind(m.BATCH)]

    @property
    def stopped(self) -> bool:
        """Told to leave (STOP sent, or the handle stopped or killed)."""
        return bool(self.channel.of_kind(m.STOP) or self.handle.stops or self.handle.killed)


class FakeBackend(Backend):
    """Starts nothing: each start is recorded as a `FakeContainer` the test drives."""

    def __init__(self) -> None:
        self.scheduler: Scheduler | None = None
        self.containers: list[FakeContainer] = []
        self.retired: list[str] = []
        self.start_error: Exception | None = None  # raised by every start while set

    async def start(self, spec: ContainerSpec, log: LogSink) -> ContainerHandle:
        if self.start_error is not None:
            raise self.start_error
        handle = FakeHandle(spec.container_id)
        self.containers.append(FakeContainer(self, spec, handle))
        return handle

    def capacity(self) -> Capacity:
        return Capacity(cpus=16.0, memory_mb=65536)

    def retire(self, group: str) -> None:
        self.retired.append(group)

    @property
    def launches(self) -> list[ContainerSpec]:
        return [c.spec for c in self.containers]

    def live(self) -> list[FakeContainer]:
        return [c for c in self.containers if not c.handle.exited]

    def by_cid(self, cid: str) -> FakeContainer:
        return next(c for c in self.containers if c.cid == cid)


class FakeLogs:
    """Stands in for `LogHub`: platform events are kept as (container id, text)."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []

    def event(self, app_id: str, function: str, container: str, text: str) -> None:
        self.events.append((container, text))

    def emit(self, app_id: str, function: str, container: str, stream: str, line: str) -> None:
        pass


# -- functions -----------------------------------------------------------------------------
_IMAGE = BuiltImage(
    hash="fake", python=Path("/fake/env/bin/python"), env={}, workdir=None, root=Path("/fake")
)


def make_fdef(
    tag: str = "f",
    *,
    version: int = 1,
    function_id: str | None = None,
    app_id: str = "ap-test",
    **options: Any,
) -> FunctionDef:
    """A deployed function with `options` (OptionsSpec fields; `retries` may be a dict)."""
    if isinstance(options.get("retries"), dict):
        options["retries"] = RetriesSpec(**options["retries"])
    spec = StoredFunction(
        tag=tag,
        module="app_module",
        options=OptionsSpec(**options),
        image=ImageSpec(python_version="3.12"),
    )
    return FunctionDef(
        function_id or f"fu-{tag}", app_id, "app", "main", version, tag, spec, _IMAGE, None, None
    )


# -- the whole rig -------------------------------------------------------------------------
class Sim:
    """A scheduler with a fake clock and backend, and one client whose results are kept.
    Built inside a running loop (the fake handles need it)."""

    CLIENT = "cl-test"

    def __init__(self, *, max_queue: int = 10_000) -> None:
        self.clock = FakeClock()
        self.backend = FakeBackend()
        self.logs = FakeLogs()
        self.sched = Scheduler(
            backend=self.backend,
            store=None,  # type: ignore[arg-type]  # only spawned calls use it
            logs=self.logs,  # type: ignore[arg-type]
            call_addr="unix:/fake/call.sock",
            token="tok",
            result_ttl=60.0,
            secret_env=lambda fdef: {},
            sockets_dir=Path("/fake/sockets"),
            max_queue=max_queue,
            clock=self.clock,
        )
        self.backend.scheduler = self.sched
        self.client = FakeChannel()
        self.sched.client_connected(self.CLIENT, self.client.as_channel())

    def deploy(self, tag: str = "f", **kwargs: Any) -> FunctionDef:
        fdef = make_fdef(tag, **kwargs)
        self.sched.register(fdef)
        return fdef

    def submit(self, fdef: FunctionDef, iid: str, **request: Any) -> None:
        request.setdefault("args", iid.encode())
        self.sched.submit(fdef.function_id, iid, request, "call", self.CLIENT)

    def pool(self, fdef: FunctionDef, params: bytes | None = None) -> Pool:
        return self.sched.pool_for(fdef, params)

    async def settle(self) -> None:
        await settle()

    async def advance(self, dt: float) -> None:
        await self.clock.advance(dt)

    async def tick(self) -> None:
        """The server's periodic scaling pass, once."""
        self.sched.tick()
        await settle()

    async def sweep(self) -> None:
        self.sched.sweep_deadlines()
        await settle()

    async def start_ready(self, n: int | None = None) -> list[FakeContainer]:
        """Every launched container that has not connected yet connects and says READY."""
        await settle()
        fresh = [c for c in self.backend.live() if c.init is None]
        for c in fresh[:n]:
            c.ready()
        await settle()
        return fresh[:n]

    def results(self) -> dict[str, dict[str, Any]]:
        """The client's RES messages by input id (the last one of each)."""
        return {msg["iid"]: msg for msg in self.client.of_kind(m.RES)}

    def res(self, iid: str) -> dict[str, Any]:
        return self.results()[iid]

    def error(self, iid: str) -> BaseException | str:
        """The exception a failed input's caller would get (its repr when not pickled)."""
        res = self.res(iid)
        assert not res["ok"] and isinstance(res["error"], dict), res
        data = res["error"]["exc"]
        return pickle.loads(data) if data is not None else str(res["error"]["repr"])
