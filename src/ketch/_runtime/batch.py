"""Running a `@batched` function in the container: the inputs of one batch become one call
with a list per parameter, and the list it returns is split back, one item per caller."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ketch._utils import payload
from ketch._utils.protocol import messages as m
from ketch.exception import InvalidError

if TYPE_CHECKING:
    from ketch._runtime.entry import Runtime

_P = inspect.Parameter


@dataclass(eq=False)
class Batch:
    iids: list[str]
    pending: set[str] = field(default_factory=set)  # inputs whose callers still wait
    task: asyncio.Task[None] | None = None
    in_thread: bool = False  # sync code runs: it cannot be interrupted


@dataclass
class Collated:
    positional: list[list[Any]]
    keyword: dict[str, list[Any]]
    iids: list[str]  # inputs in the call, in list order
    refused: dict[str, BaseException]  # inputs whose arguments do not fit the signature


def collate(
    fn: Callable[..., Any], calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]]
) -> Collated:
    """One list per parameter of `fn`, from each caller's arguments (defaults filled in)."""
    sig = inspect.signature(fn)
    params = list(sig.parameters.values())
    if any(p.kind in (_P.VAR_POSITIONAL, _P.VAR_KEYWORD) for p in params):
        raise InvalidError(
            "a @batched function takes named parameters, each receiving a list; "
            "*args and **kwargs cannot be batched"
        )
    columns: dict[str, list[Any]] = {p.name: [] for p in params}
    iids: list[str] = []
    refused: dict[str, BaseException] = {}
    for iid, args, kwargs in calls:
        try:
            bound = sig.bind(*args, **kwargs)
        except TypeError as exc:
            refused[iid] = exc
            continue
        bound.apply_defaults()
        for name, column in columns.items():
            column.append(bound.arguments[name])
        iids.append(iid)
    positional = [columns[p.name] for p in params if p.kind is _P.POSITIONAL_ONLY]
    keyword = {p.name: columns[p.name] for p in params if p.kind is not _P.POSITIONAL_ONLY}
    return Collated(positional, keyword, iids, refused)


def split(result: Any, n: int, name: str) -> list[Any]:
    """The batch's results, one per input; InvalidError when they do not line up."""
    if not isinstance(result, list | tuple):
        raise InvalidError(
            f"@batched function {name} must return a list with one result per input "
            f"({n} inputs), got {type(result).__name__}"
        )
    if len(result) != n:
        raise InvalidError(
            f"@batched function {name} returned {len(result)} results for {n} inputs; it "
            "must return exactly one result per input, in input order"
        )
    return list(result)


def start(rt: Runtime, msg: m.Batch) -> None:
    """Begin one batch; its inputs share a task."""
    inputs = msg["inputs"]
    batch = Batch([i["iid"] for i in inputs])
    batch.pending = set(batch.iids)
    task = asyncio.ensure_future(_run(rt, batch, inputs))
    batch.task = task
    for iid in batch.iids:
        rt.batches[iid] = batch
        rt.tasks[iid] = task


def cancel(rt: Runtime, iid: str) -> None:
    """The server gave up on one input (timeout or cancel). The batch runs on for the
    others; once all of them are given up, it is stopped (or the container replaced)."""
    batch = rt.batches.get(iid)
    if batch is None:
        return
    batch.pending.discard(iid)
    if batch.pending:
        return
    if batch.in_thread:
        stuck: m.Stuck = {"t": m.STUCK, "iid": iid}
        rt.ch.send(stuck)
    elif batch.task is not None:
        batch.task.cancel()


async def _run(rt: Runtime, batch: Batch, inputs: list[m.BatchInput]) -> None:
    assert rt.target is not None
    outs: dict[str, m.Out] = {}
    good: list[str] = []
    try:
        fn = rt.target.resolve(inputs[0].get("method"))
        calls = []
        for item in inputs:
            try:
                args, kwargs = payload.loads(item["args"])
            except BaseException as exc:
                outs[item["iid"]] = _failed(rt, item["iid"], exc)
                continue
            calls.append((item["iid"], args, kwargs))
        col = collate(fn, calls)
        for iid, refusal in col.refused.items():
            outs[iid] = _failed(rt, iid, refusal)
        good = col.iids
        if good:
            result = await _call(rt, batch, fn, col)
            name = getattr(fn, "__qualname__", "")
            for iid, value in zip(good, split(result, len(good), name), strict=True):
                outs[iid] = {"t": m.OUT, "iid": iid, "ok": True, "payload": payload.dumps(value)}
    except asyncio.CancelledError:
        return  # the server has answered every caller already
    except BaseException as exc:
        # The function failed (or its output did not line up): each caller gets the error.
        for iid in good or batch.iids:
            outs.setdefault(iid, _failed(rt, iid, exc))
    finally:
        for iid in batch.iids:
            rt.tasks.pop(iid, None)
            rt.batches.pop(iid, None)
    for out in outs.values():
        rt.ch.send(out)


async def _call(rt: Runtime, batch: Batch, fn: Callable[..., Any], col: Collated) -> Any:
    if inspect.iscoroutinefunction(fn):
        return await fn(*col.positional, **col.keyword)
    batch.in_thread = True
    try:
        result = await asyncio.get_running_loop().run_in_executor(
            rt.pool, lambda: fn(*col.positional, **col.keyword)
        )
    finally:
        batch.in_thread = False
    if inspect.isawaitable(result):
        result = await result
    return result


def _failed(rt: Runtime, iid: str, exc: BaseException) -> m.Out:
    return {"t": m.OUT, "iid": iid, "ok": False, "error": rt._error(exc)}
