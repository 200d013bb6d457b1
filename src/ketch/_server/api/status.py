"""`GET /v1/apps/{name}/status`: per function, containers by state, queue depth and why
inputs wait (issue 4, "Status"); `GET /v1/status/functions` for every running app."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Depends

from ketch._server.api.auth import token_auth
from ketch._server.api_models import AppRef, EnvQuery

if TYPE_CHECKING:
    from ketch._server.main import Server


def status_router(server: Server) -> APIRouter:
    router = APIRouter(dependencies=[Depends(token_auth(server))])

    @router.get("/v1/apps/{name}/status")
    async def app_status(name: AppRef, environment: EnvQuery = "main") -> dict[str, Any]:
        from ketch._server.api.ops import resolve_app_id

        app_id = resolve_app_id(server, environment, name)
        live = server.apps.apps.get(app_id)
        return {
            "app_id": app_id,
            "name": name,
            "running": live is not None,
            "functions": server.scheduler.status(app_id),
            "schedules": server.schedules.status(app_id),
        }

    @router.get("/v1/status/functions")
    async def all_status() -> dict[str, Any]:
        return {"functions": server.scheduler.status()}

    return router
