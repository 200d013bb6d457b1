"""`GET /v1/apps/{name}/schedules` and `POST /v1/apps/{name}/schedules/{function}/run`:
an app's schedules with their next runs, and one run started now (`ketch app run-now`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Depends, Path

from ketch._server.api.auth import token_auth
from ketch._server.api_models import AppRef, EnvQuery
from ketch._utils.protocol.spec import TAG_PATTERN
from ketch.exception import NotFoundError

if TYPE_CHECKING:
    from ketch._server.main import Server

FunctionRef = Annotated[str, Path(pattern=TAG_PATTERN, description="a function's name")]


def running_app_id(server: Server, environment: str, name: str) -> str:
    """A running app (deployed, or ephemeral and open) by name or id."""
    found = server.apps.find(environment, name)
    if found is not None:
        return str(found["app_id"])
    if name in server.apps.apps:
        return name
    for app_id, info in server.apps.apps.items():
        if info["name"] == name and info["environment"] == environment:
            return app_id
    raise NotFoundError(f"app {name!r} is not running in environment {environment!r}")


def schedules_router(server: Server) -> APIRouter:
    router = APIRouter(dependencies=[Depends(token_auth(server))])

    @router.get("/v1/apps/{name}/schedules")
    async def schedules(name: AppRef, environment: EnvQuery = "main") -> dict[str, Any]:
        app_id = running_app_id(server, environment, name)
        return {"app_id": app_id, "schedules": server.schedules.status(app_id)}

    @router.post("/v1/apps/{name}/schedules/{function}/run")
    async def run_now(
        name: AppRef, function: FunctionRef, environment: EnvQuery = "main"
    ) -> dict[str, Any]:
        app_id = running_app_id(server, environment, name)
        return {"app_id": app_id, "call_id": server.schedules.run_now(app_id, function)}

    return router
