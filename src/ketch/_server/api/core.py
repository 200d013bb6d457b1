"""The management API: HTTP + JSON (with an OpenAPI document) for deploys, apps and secrets."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from typing import TYPE_CHECKING, Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from ketch._server.api.auth import TokenGuard, token_auth
from ketch._server.api.ops import build_ops_router
from ketch._server.api.progress import error_body, stream_progress
from ketch._server.api_models import (
    AppRef,
    DeployIn,
    EnvQuery,
    IdParam,
    NameParam,
    SecretIn,
    ShaParam,
    describe_errors,
    errors_text,
)
from ketch.exception import AlreadyExistsError, Error, InvalidError, NotFoundError

if TYPE_CHECKING:
    from ketch._server.main import Server

log = logging.getLogger("ketch.api")

_STATUS = {InvalidError: 400, NotFoundError: 404, AlreadyExistsError: 409}
_RAW_BODY = {
    "requestBody": {
        "required": False,
        "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
    }
}


class AsciiJSONResponse(JSONResponse):
    """JSON with every non-ASCII character escaped: file names read from disk may hold
    undecodable bytes (lone surrogates), which UTF-8 cannot encode."""

    def render(self, content: Any) -> bytes:
        return json.dumps(
            content, ensure_ascii=True, allow_nan=False, separators=(",", ":")
        ).encode("ascii")


def _precise_keys(node: Any) -> None:
    """Say in the OpenAPI document what the models check: pydantic describes a dict with
    constrained keys as `patternProperties`, which lets any other key through with any
    value; `propertyNames` plus `additionalProperties` is the exact contract."""
    if isinstance(node, dict):
        patterns = node.get("patternProperties")
        if (
            isinstance(patterns, dict)
            and len(patterns) == 1
            and not {"properties", "additionalProperties"} & set(node)
        ):
            ((pattern, value),) = patterns.items()
            del node["patternProperties"]
            node["propertyNames"] = {**node.get("propertyNames", {}), "pattern": pattern}
            node["additionalProperties"] = value
        for child in node.values():
            _precise_keys(child)
    elif isinstance(node, list):
        for child in node:
            _precise_keys(child)


def build_api(server: Server) -> FastAPI:
    app = FastAPI(
        title="ketch management API", version="1", default_response_class=AsciiJSONResponse
    )
    app.include_router(build_ops_router(server))  # history, rollback, logs, containers, calls
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            _precise_keys(generate())  # generate() keeps what it made in app.openapi_schema
        return app.openapi_schema or {}

    app.openapi = openapi  # type: ignore[method-assign]

    auth = token_auth(server)

    @app.exception_handler(Error)
    async def on_error(request: Request, exc: Error) -> JSONResponse:
        code = next((c for t, c in _STATUS.items() if isinstance(exc, t)), 500)
        return AsciiJSONResponse(error_body(exc), status_code=code)

    @app.exception_handler(RequestValidationError)
    async def on_invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        # The SDK raises InvalidError from "error"; "detail" lists each field for tools.
        errors = exc.errors()
        message = f"invalid request: {errors_text(errors)}"
        return AsciiJSONResponse(
            {
                "error": {"type": "InvalidError", "message": message},
                "detail": describe_errors(errors, limit=20),
            },
            status_code=422,
        )

    @app.exception_handler(StarletteHTTPException)
    async def on_http(request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code in (204, 304):
            return Response(status_code=exc.status_code, headers=exc.headers)
        return AsciiJSONResponse(
            {"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers
        )

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        from ketch._server.metrics import registry_for

        return Response(generate_latest(registry_for(server)), media_type=CONTENT_TYPE_LATEST)

    from ketch._server.api.status import status_router

    app.include_router(status_router(server))
    from ketch._server.api.schedules import schedules_router

    app.include_router(schedules_router(server))  # ketch app run-now, schedules in status
    from ketch._server.api.handles import handles_router

    app.include_router(handles_router(server))  # App.lookup, update_autoscaler, stats

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
                cid: {
                    "state": c.state,
                    "function": c.pool.function.tag,
                    "app_id": c.pool.function.app_id,
                    "inflight": len(c.inflight),
                }
                for cid, c in sched.containers.items()
            },
            "queued": sum(len(p.queue) for p in sched.pools.values()),
            # Where host- and custom-domain-routed web traffic goes (Host header decides).
            "gateway": server.web.gateway_url(),
            "counters": dict(sched.counters),
        }

    @app.put("/v1/blobs/{sha}", dependencies=[Depends(auth)], openapi_extra=_RAW_BODY)
    async def put_blob(sha: ShaParam, request: Request) -> dict[str, Any]:
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

    @app.post(
        "/v1/apps/deploy",
        dependencies=[Depends(auth)],
        response_class=StreamingResponse,
        responses={
            200: {
                "description": "The deploy's log lines, then its result or "
                "error: one JSON object per line.",
                "content": {"application/x-ndjson": {}},
            }
        },
    )
    async def deploy(spec: DeployIn) -> StreamingResponse:
        # What needs no build is checked before the stream starts: it gets a status code.
        prepared = server.apps.prepare_deploy(spec)
        return stream_progress(
            lambda say: server.apps.finish_deploy(prepared, say), f"deploy of {spec.name!r}"
        )

    @app.get("/v1/apps", dependencies=[Depends(auth)])
    async def list_apps() -> list[dict[str, Any]]:
        live = server.apps.apps
        out = []
        for row in server.store.list_apps():
            info = live.get(row["app_id"])
            containers = sum(
                1
                for c in server.scheduler.containers.values()
                if c.pool.function.app_id == row["app_id"]
            )
            broken = server.apps.broken.get(row["app_id"])
            if broken is not None and row["state"] == "deployed":
                row = {**row, "state": "broken"}
            out.append(
                {
                    **row,
                    "running": info is not None,
                    "containers": containers,
                    "functions": sorted((info or {}).get("functions", {})),
                    "error": broken["error"] if broken is not None else None,
                }
            )
        return out

    @app.post("/v1/apps/{name}/stop", dependencies=[Depends(auth)])
    async def stop_app(name: AppRef, environment: EnvQuery = "main") -> dict[str, Any]:
        app_ = server.apps.find(environment, name)
        app_id: str | None
        if app_ is not None:
            app_id = app_["app_id"]
        else:
            # An id, the name of a running ephemeral app (`ketch run --detach`), or an app
            # that did not come back on start.
            app_id = (
                name
                if name in server.apps.apps
                else next(
                    (
                        i
                        for i, a in server.apps.apps.items()
                        if a["name"] == name and a["environment"] == environment
                    ),
                    server.apps.find_broken(environment, name),
                )
            )
            if app_id is None:
                raise NotFoundError(f"app {name!r} is not running in environment {environment!r}")
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
    async def revoke_token(token_id: IdParam) -> dict[str, Any]:
        if not server.store.revoke_token(token_id):
            raise NotFoundError(f"no live proxy token {token_id!r}")
        server.web.reload_tokens()
        return {"revoked": token_id}

    @app.get("/v1/endpoints", dependencies=[Depends(auth)])
    async def endpoints() -> list[dict[str, Any]]:
        table = server.web.table
        return [
            {
                "app": ep.app_name,
                "app_id": ep.app_id,
                "function": ep.tag,
                "host": ep.host,
                "url": server.web.url(ep),
                "host_url": server.web.host_url(ep),
            }
            for ep in sorted(table.by_host.values(), key=lambda e: e.host)
        ]

    @app.post("/v1/secrets", dependencies=[Depends(auth)])
    async def create_secret(body: SecretIn) -> dict[str, Any]:
        server.apps.put_secret(body.environment, body.name, body.values, body.force)
        return {"name": body.name, "keys": sorted(body.values)}

    @app.get("/v1/secrets", dependencies=[Depends(auth)])
    async def list_secrets(environment: EnvQuery = "main") -> list[dict[str, Any]]:
        return server.store.list_secrets(environment)

    @app.delete("/v1/secrets/{name}", dependencies=[Depends(auth)])
    async def delete_secret(name: NameParam, environment: EnvQuery = "main") -> dict[str, Any]:
        if not server.store.delete_secret(environment, name):
            raise NotFoundError(f"secret {name!r} not found in environment {environment!r}")
        return {"deleted": name}

    from ketch._server.api.volumes import volume_router

    app.include_router(volume_router(server))
    from ketch._server.api.images import image_router

    app.include_router(image_router(server))  # ketch image list | rm | prune
    from ketch._server.api.sandboxes import sandbox_router

    app.include_router(sandbox_router(server))  # ketch.Sandbox, ketch sandbox list | stop
    from ketch._server.api.nodes import node_router

    app.include_router(node_router(server))  # ketch node list
    from ketch._server.dashboard import dashboard_router

    app.include_router(dashboard_router(server))  # /dashboard and its login links (O4)
    # Deny by default: every /v1 path but the public ones needs the token before its body
    # is read, including routes of included routers (which `app.routes` does not list one by
    # one) and routes added later. The dashboard has a session guard of its own.
    app.add_middleware(TokenGuard, server=server, protected=_needs_token)
    return app


PUBLIC_PATHS = frozenset({"/v1/health"})


def _needs_token(scope: dict[str, Any]) -> bool:
    path: str = scope.get("path", "")
    return path.startswith("/v1/") and path not in PUBLIC_PATHS
