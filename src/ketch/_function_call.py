"""`FunctionCall`: a spawned call's handle, usable from any process that has its id."""

from __future__ import annotations

import asyncio
from typing import Any, Generic, TypeVar

from ketch._client.client import Client, result_of
from ketch._utils.aio import Aio, aio_method
from ketch._utils.protocol import messages as m
from ketch.exception import InvalidError

R = TypeVar("R")


class FunctionCall(Generic[R]):
    """A spawned call: poll or wait for its result from any process, or cancel it."""

    def __init__(self, call_id: str) -> None:
        if not isinstance(call_id, str) or not call_id.startswith("fc-"):
            raise InvalidError(f"{call_id!r} is not a function call id (they start with 'fc-')")
        self.object_id = call_id

    def __repr__(self) -> str:
        return f"FunctionCall({self.object_id!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (FunctionCall, (self.object_id,))

    @staticmethod
    def from_id(function_call_id: str) -> FunctionCall[Any]:
        return FunctionCall(function_call_id)

    async def _get(self, timeout: float | None = None) -> R:
        client = await Client.current()
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + max(0.0, timeout)
        while True:
            # Wait in slices, so that a server restart only costs one slice.
            left = 50.0 if deadline is None else max(0.0, min(50.0, deadline - loop.time()))
            reply = await client.request({"t": m.GET, "call_id": self.object_id, "timeout": left})
            if not reply.get("pending"):
                result: R = result_of(reply["result"])
                return result
            if deadline is not None and loop.time() >= deadline:
                raise TimeoutError(f"{self.object_id} has not finished yet")

    async def _cancel(self, terminate_containers: bool = False) -> None:
        client = await Client.current()
        await client.request({"t": m.CANCEL, "call_id": self.object_id})

    @staticmethod
    async def _gather(*calls: FunctionCall[Any]) -> list[Any]:
        return list(await asyncio.gather(*(c._get() for c in calls)))

    gather = Aio(_gather, "gather")

    # The blocking methods and their `.aio` forms (ketch._utils.aio).
    get = aio_method(_get)
    cancel = aio_method(_cancel)
