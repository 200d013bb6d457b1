"""The management API: HTTP + JSON (with an OpenAPI document) for deploys, apps and secrets."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel

from ketch._server.api_auth import token_auth
from ketch._server.ops_api import build_ops_router
from ketch.exception import AlreadyExistsError, Error, InvalidError, NotFoundError

if TYPE_CHECKING:
    from ketch._server.main import Server

_STATUS = {InvalidError: 400, NotFoundError: 404, AlreadyExistsError: 409}


class SecretIn(BaseModel):
    name: str
    values: dict[str, str]
    environment: str = "main"
    force: bool = False


def _error_body(exc: Error) -> dict[str, Any]:
    return {"error": {"type": type(exc).__name__, "message": str(exc)}}


def build_api(server: Server) -> FastAPI:
    app = FastAPI(title="ketch management API", version="1")
    app.include_router(build_ops_router(server))  # history, rollback, logs, containers, calls

    auth = token_auth(server)

    @app.exception_handler(Error)
    async def on_error(request: Request, exc: Error) -> JSONResponse:
        code = next((c for t, c in _STATUS.items() if isinstance(exc, t)), 500)
        return JSONResponse(_error_body(exc), status_code=code)

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        from ketch._server.metrics import registry_for

        return Response(generate_latest(registry_for(server)), media_type=CONTENT_TYPE_LATEST)

    from ketch._server.api_status import status_router

    app.include_router(status_router(server))

    @app.get("/v1/health")
    async def health() -> dict[str, Any]:
        return {"ok": True, "pid": os.getpid(), "started": server.started}

    @app.get("/v1/status", dependencies=[Depends(auth)])
    async def status() -> dict[str, Any]:
        sched = server.scheduler
        return {
            "pid": os.getpid(),
            "uptime": time.time() - server.started,
            "apps": len(server.apps.apps),
            "containers": {
                cid: {"state": c.state, "function": c.pool.function.tag,
                      "app_id": c.pool.function.app_id, "inflight": len(c.inflight)}
                for cid, c in sched.containers.items()
            },
            "queued": sum(len(p.queue) for p in sched.pools.values()),
            # Where host- and custom-domain-routed web traffic goes (Host header decides).
            "gateway": server.web.gateway_url(),
            "counters": dict(sched.counters),
        }

    @app.put("/v1/blobs/{sha}", dependencies=[Depends(auth)])
    async def put_blob(sha: str, request: Request) -> dict[str, Any]:
        path = server.apps.blob_path(sha)
        if path.exists():
            return {"sha": sha, "existed": True}
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{sha}.{os.getpid()}.{time.monotonic_ns()}.part")
        digest = hashlib.sha256()
        try:
            with tmp.open("wb") as fh:
                async for chunk in request.stream():
                    digest.update(chunk)
                    fh.write(chunk)
            if digest.hexdigest() != sha:
                raise InvalidError("uploaded blob does not match its sha256")
            tmp.replace(path)
        finally:
            tmp.unlink(missing_ok=True)
        return {"sha": sha, "existed": False}

    @app.post("/v1/apps/deploy", dependencies=[Depends(auth)])
    async def deploy(request: Request) -> StreamingResponse:
        spec = await request.json()
        queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()

        async def run() -> None:
            try:
                result = await server.apps.deploy(
                    spec, lambda line: queue.put_nowait({"log": line})
                )
                queue.put_nowait({"result": result})
            except Error as exc:
                queue.put_nowait(_error_body(exc))
            except Exception as exc:
                queue.put_nowait({"error": {"type": "Error", "message": repr(exc)}})
            finally:
                queue.put_nowait(None)

        task = asyncio.ensure_future(run())

        async def lines() -> AsyncIterator[bytes]:
            try:
                while (item := await queue.get()) is not None:
                    yield json.dumps(item).encode() + b"\n"
            finally:
                # The deploy goes on even if the client leaves; it must not be half-done.
                await asyncio.shield(task)

        return StreamingResponse(lines(), media_type="application/x-ndjson")

    @app.get("/v1/apps", dependencies=[Depends(auth)])
    async def list_apps() -> list[dict[str, Any]]:
        live = server.apps.apps
        out = []
        for row in server.store.list_apps():
            info = live.get(row["app_id"])
            containers = sum(
                1 for c in server.scheduler.containers.values()
                if c.pool.function.app_id == row["app_id"]
            )
            out.append({**row, "running": info is not None, "containers": containers,
                        "functions": sorted((info or {}).get("functions", {}))})
        return out

    @app.post("/v1/apps/{name}/stop", dependencies=[Depends(auth)])
    async def stop_app(name: str, environment: str = "main") -> dict[str, Any]:
        app_ = server.apps.find(environment, name)
        if app_ is None:
            # An id, or the name of a running ephemeral app (`ketch run --detach`).
            app_id = name if name in server.apps.apps else next(
                (i for i, a in server.apps.apps.items()
                 if a["name"] == name and a["environment"] == environment), None)
            if app_id is None:
                raise NotFoundError(f"app {name!r} is not running in environment {environment!r}")
        else:
            app_id = app_["app_id"]
        server.apps.stop(app_id)
        return {"stopped": app_id}

    @app.post("/v1/tokens", dependencies=[Depends(auth)])
    async def create_token() -> dict[str, Any]:
        from ketch._gateway.auth import hash_secret, new_token

        token_id, secret = new_token()
        server.store.add_token(token_id, hash_secret(secret))
        server.web.reload_tokens()
        return {"token_id": token_id, "secret": secret}

    @app.get("/v1/tokens", dependencies=[Depends(auth)])
    async def list_tokens() -> list[dict[str, Any]]:
        return server.store.list_tokens()

    @app.delete("/v1/tokens/{token_id}", dependencies=[Depends(auth)])
    async def revoke_token(token_id: str) -> dict[str, Any]:
        if not server.store.revoke_token(token_id):
            raise NotFoundError(f"no live proxy token {token_id!r}")
        server.web.reload_tokens()
        return {"revoked": token_id}

    @app.get("/v1/endpoints", dependencies=[Depends(auth)])
    async def endpoints() -> list[dict[str, Any]]:
        table = server.web.table
        return [
            {"app": ep.app_name, "app_id": ep.app_id, "function": ep.tag, "host": ep.host,
             "url": server.web.url(ep), "host_url": server.web.host_url(ep)}
            for ep in sorted(table.by_host.values(), key=lambda e: e.host)
        ]

    @app.post("/v1/secrets", dependencies=[Depends(auth)])
    async def create_secret(body: SecretIn) -> dict[str, Any]:
        server.apps.put_secret(body.environment, body.name, body.values, body.force)
        return {"name": body.name, "keys": sorted(body.values)}

    @app.get("/v1/secrets", dependencies=[Depends(auth)])
    async def list_secrets(environment: str = "main") -> list[dict[str, Any]]:
        return server.store.list_secrets(environment)

    @app.delete("/v1/secrets/{name}", dependencies=[Depends(auth)])
    async def delete_secret(name: str, environment: str = "main") -> dict[str, Any]:
        if not server.store.delete_secret(environment, name):
            raise NotFoundError(f"secret {name!r} not found in environment {environment!r}")
        return {"deleted": name}

    from ketch._server.api_volumes import volume_router

    app.include_router(volume_router(server))
    return app
