"""Spawned calls (`.spawn()`): accepted into the store before they run, so that they run
again after a server restart; their outcomes recorded there and awaited by `get`. The
values of inline secrets in a stored request are sealed with the server's key."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import pickle
from typing import TYPE_CHECKING, Any

from ketch._server.errors import error_payload
from ketch.exception import ExecutionError, NotFoundError

if TYPE_CHECKING:
    from ketch._server.crypto import SecretBox
    from ketch._server.model import Input
    from ketch._server.scheduler import Scheduler


class SpawnedCalls:
    def __init__(self, scheduler: Scheduler, result_ttl: float) -> None:
        self.s = scheduler
        self.store = scheduler.store
        self.result_ttl = result_ttl
        # Seals the inline secrets of spawned calls' stored requests (set by the server).
        self.box: SecretBox | None = None
        self.waiters: dict[str, list[asyncio.Future[None]]] = collections.defaultdict(list)

    def spawn(self, function_id: str, call_id: str, request: dict[str, Any]) -> None:
        s = self.s
        if self.store.get_call(call_id) is not None:
            return  # sent again after a reconnect: the first copy was accepted and stored
        fdef = s.functions.get(function_id)
        if fdef is None:
            raise NotFoundError(f"function {function_id} is not deployed")
        full = s.queue_full(s.pool_for(fdef, request.get("params"), request.get("options")))
        if full is not None:
            raise full
        self.store.insert_call(call_id, function_id, fdef.app_id, self.stored_request(request))
        s.submit(function_id, call_id, request, "call", None, spawned=True)

    def resume(self) -> int:
        """Re-queue spawned calls that had not finished when the server last stopped."""
        n = 0
        for call_id, fid, _app_id, data in self.store.pending_calls():
            if fid in self.s.functions:
                self.s.submit(fid, call_id, self.loaded_request(data), "call", None, spawned=True)
            else:
                self._record_undeployed(call_id)
            n += 1
        return n

    def record(
        self,
        inp: Input,
        ok: bool,
        payload: bytes | None,
        error: dict[str, Any] | None,
        status: str | None,
    ) -> None:
        """A spawned call's outcome, stored; whoever waits for it is woken."""
        st = status or ("ok" if ok else "error")
        record = pickle.dumps({"ok": ok, "payload": payload, "error": error})
        self.store.finish_call(inp.iid, st, record, inp.attempts + 1, self.result_ttl)
        for fut in self.waiters.pop(inp.iid, []):
            if not fut.done():
                fut.set_result(None)

    def _record_undeployed(self, call_id: str) -> None:
        """A spawned call that cannot run again after a restart: its app is gone."""
        err = pickle.dumps(
            {
                "ok": False,
                "payload": None,
                "error": error_payload(ExecutionError("the function's app is not deployed")),
            }
        )
        self.store.finish_call(call_id, "error", err, 0, self.result_ttl)

    async def wait(self, call_id: str, timeout: float | None) -> dict[str, Any] | None:
        row = self.store.get_call(call_id)
        if row is None or row["status"] != "pending" or timeout == 0:
            return row
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.waiters[call_id].append(fut)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(fut, timeout)
        return self.store.get_call(call_id)

    def stored_request(self, request: dict[str, Any]) -> bytes:
        """A spawned call's request as the store keeps it: the values of inline secrets
        (`with_options(secrets=[Secret.from_dict(...)])`) sealed, never in plain text."""
        overrides = request.get("options") or {}
        secrets = overrides.get("secrets")
        if secrets:
            sealed = [self._seal(s) if s.get("kind") == "inline" else s for s in secrets]
            request = {**request, "options": {**overrides, "secrets": sealed}}
        return pickle.dumps(request)

    def _seal(self, secret: dict[str, Any]) -> dict[str, Any]:
        if self.box is None:
            # No key to seal with (a scheduler outside a server): the values are not kept,
            # and a call re-run after a restart goes without them.
            return {"kind": "dropped"}
        data = self.box.encrypt(json.dumps(secret.get("values") or {}).encode())
        return {"kind": "sealed", "data": data}

    def loaded_request(self, data: bytes) -> dict[str, Any]:
        request: dict[str, Any] = pickle.loads(data)  # the server's own record (spawn)
        overrides = request.get("options") or {}
        secrets = overrides.get("secrets")
        if secrets:
            opened = []
            for s in secrets:
                if s.get("kind") == "sealed" and self.box is not None:
                    s = {"kind": "inline", "values": json.loads(self.box.decrypt(s["data"]))}
                if s.get("kind") in ("inline", "named"):
                    opened.append(s)
            request = {**request, "options": {**overrides, "secrets": opened}}
        return request
