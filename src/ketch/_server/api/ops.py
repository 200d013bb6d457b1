"""Management API routes for operating apps: versions and rollback, logs (stored and
followed), containers, and call records."""

from __future__ import annotations

import json
import pickle
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Depends
from fastapi.responses import StreamingResponse

from ketch._server.api.auth import token_auth
from ketch._server.api_models import (
    AppQuery,
    AppRef,
    ContainerQuery,
    EnvQuery,
    FunctionQuery,
    IdParam,
    LimitQuery,
    SourceQuery,
    TailQuery,
    VersionQuery,
)
from ketch._server.logs import Follower, LogFilter
from ketch._server.store import CallRecords
from ketch._utils.ids import stable_id
from ketch.exception import InvalidError, NotFoundError

if TYPE_CHECKING:
    from ketch._server.main import Server


def build_ops_router(server: Server) -> APIRouter:
    router = APIRouter(dependencies=[Depends(token_auth(server))])
    records = CallRecords(server.store)

    # -- versions -----------------------------------------------------------------------
    @router.get("/v1/apps/{name}/history")
    async def history(name: AppRef, environment: EnvQuery = "main") -> dict[str, Any]:
        app_id = resolve_app_id(server, environment, name)
        return {"app_id": app_id, "versions": server.apps.history(app_id)}

    @router.post("/v1/apps/{name}/rollback")
    async def rollback(
        name: AppRef, environment: EnvQuery = "main", version: VersionQuery = None
    ) -> dict[str, Any]:
        app = server.apps.find(environment, name)
        if app is None:
            if name not in server.apps.apps:
                raise NotFoundError(f"app {name!r} is not deployed in environment {environment!r}")
            app_id = name
        else:
            app_id = app["app_id"]
        lines: list[str] = []
        out = await server.apps.rollback(app_id, version, lines.append)
        return {**out, "log": lines}

    # -- logs ---------------------------------------------------------------------------
    @router.get("/v1/apps/{name}/logs", response_model=None)
    async def app_logs(
        name: AppRef,
        environment: EnvQuery = "main",
        tail: TailQuery = None,
        since: float | None = None,
        function: FunctionQuery = None,
        source: SourceQuery = [],  # noqa: B006 (FastAPI copies defaults)
        container: ContainerQuery = None,
        follow: bool = False,
    ) -> dict[str, Any] | StreamingResponse:
        app_id = resolve_app_id(server, environment, name)
        match = LogFilter(function=function, sources=list(source), container=container, since=since)
        return _logs(server, app_id, match, tail, follow)

    @router.get("/v1/containers/{cid}/logs", response_model=None)
    async def container_logs(
        cid: IdParam, tail: TailQuery = None, follow: bool = False
    ) -> dict[str, Any] | StreamingResponse:
        app_id = server.logs.app_of_container(cid)
        live = server.scheduler.containers.get(cid)
        if live is not None:
            app_id = live.pool.function.app_id
        if app_id is None:
            raise NotFoundError(f"no container {cid!r} with logs on this server")
        return _logs(server, app_id, LogFilter(container=cid), tail, follow)

    # -- containers ---------------------------------------------------------------------
    @router.get("/v1/containers")
    async def list_containers(
        app: AppQuery = None, environment: EnvQuery = "main"
    ) -> list[dict[str, Any]]:
        app_id = resolve_app_id(server, environment, app) if app else None
        return server.scheduler.container_rows(app_id)

    @router.post("/v1/containers/{cid}/stop")
    async def stop_container(cid: IdParam) -> dict[str, Any]:
        return server.scheduler.stop_container_by_id(cid)

    # -- calls --------------------------------------------------------------------------
    @router.get("/v1/apps/{name}/calls")
    async def list_calls(
        name: AppRef, environment: EnvQuery = "main", limit: LimitQuery = 50
    ) -> dict[str, Any]:
        app_id = resolve_app_id(server, environment, name)
        server.records.flush()  # what the gateway served a moment ago is listed too
        tags = function_tags(server, app_id)
        rows = [
            {
                "call_id": r["call_id"],
                "kind": "spawn",
                "function": tags.get(r["function_id"], r["function_id"]),
                "status": r["status"],
                "attempts": r["attempts"],
                "created": r["created"],
                "duration": None if r["finished"] is None else r["finished"] - r["created"],
            }
            for r in records.spawned(app_id, limit)
        ] + [
            {
                "call_id": r["call_id"],
                "kind": "web",
                "function": r["function"],
                "status": web_status(r),
                "http_status": r["http_status"],
                "attempts": 1,
                "created": r["created"],
                "duration": r["duration"],
            }
            for r in records.web(app_id, limit)
        ]
        rows.sort(key=lambda r: r["created"], reverse=True)
        return {"app_id": app_id, "calls": rows[:limit]}

    @router.get("/v1/calls/{call_id}")
    async def get_call(call_id: IdParam) -> dict[str, Any]:
        server.records.flush()
        row = server.store.get_call(call_id)
        if row is not None:
            return spawned_detail(server, row)
        web = records.web_call(call_id)
        if web is not None:
            return {
                "call_id": call_id,
                "kind": "web",
                "app_id": web["app_id"],
                "function": web["function"],
                "status": web_status(web),
                "http_status": web["http_status"],
                "outcome": web["outcome"],
                "attempts": 1,
                "created": web["created"],
                "duration": web["duration"],
                "result": None,
                "error": None,
            }
        raise NotFoundError(
            f"no call record {call_id!r} (spawned calls are fc-..., web requests wr-...)"
        )

    return router


def resolve_app_id(server: Server, environment: str, name: str) -> str:
    """A running app by name, else the latest app of that name (or with that id)."""
    app_ = server.apps.find(environment, name)
    if app_ is not None:
        return str(app_["app_id"])
    for row in reversed(server.store.list_apps()):
        if row["app_id"] == name or (row["name"] == name and row["environment"] == environment):
            return str(row["app_id"])
    raise NotFoundError(f"no app named {name!r} in environment {environment!r}")


def _logs(
    server: Server, app_id: str, match: LogFilter, tail: int | None, follow: bool
) -> dict[str, Any] | StreamingResponse:
    if tail is not None and tail < 0:
        raise InvalidError("tail must not be negative")
    if not follow:
        return {"app_id": app_id, "entries": server.logs.entries(app_id, match, tail)}
    # Subscribed before the stored entries are read, in one step of the loop: no entry
    # falls between the two or comes twice.
    follower = Follower(match)
    server.logs.subscribe(app_id, follower)
    stored = server.logs.entries(app_id, match, tail)

    async def lines() -> AsyncIterator[bytes]:
        try:
            for entry in stored:
                yield json.dumps(entry).encode() + b"\n"
            while (entry_ := await follower.queue.get()) is not None:
                yield json.dumps(entry_).encode() + b"\n"
        finally:
            follower.closed = True
            server.logs.unsubscribe(app_id, follower)

    return StreamingResponse(lines(), media_type="application/x-ndjson")


def function_tags(server: Server, app_id: str) -> dict[str, str]:
    tags: dict[str, str] = {}
    for _, stored in server.apps.stored_versions(app_id):
        for tag in stored["functions"]:
            tags[stable_id("fu", app_id, tag)] = tag
    return tags


def web_status(row: dict[str, Any]) -> str:
    code = int(row["http_status"])
    if code == 0:
        return str(row["outcome"])  # no answer was sent: client_gone, cancelled...
    return "error" if code >= 500 else "ok"


def spawned_detail(server: Server, row: dict[str, Any]) -> dict[str, Any]:
    result: str | None = None
    error: str | None = None
    if row["result"] is not None:
        # The server's own record (a dict of bytes and strings): the user's value stays
        # pickled inside it and is only measured, never unpickled here.
        record = pickle.loads(row["result"])
        if record.get("ok"):
            result = f"{len(record.get('payload') or b'')} bytes (pickled)"
        else:
            err = record.get("error") or {}
            error = str(err.get("repr") or "error")
    elif row["status"] == "expired":
        error = "the result has expired"
    tags = function_tags(server, row["app_id"])
    finished = row["finished"]
    return {
        "call_id": row["call_id"],
        "kind": "spawn",
        "app_id": row["app_id"],
        "function": tags.get(row["function_id"], row["function_id"]),
        "status": row["status"],
        "attempts": row["attempts"],
        "created": row["created"],
        "duration": None if finished is None else finished - row["created"],
        "result": result,
        "error": error,
    }
