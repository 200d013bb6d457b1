"""Routes behind SDK handles: `App.lookup` (`POST /v1/apps/{name}/lookup`),
`Function.update_autoscaler` (`POST /v1/functions/{id}/autoscaler`) and
`Function.get_current_stats` (`GET /v1/functions/{id}/stats`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Depends
from pydantic import Field

from ketch._server import autoscaler_overrides
from ketch._server.api.auth import token_auth
from ketch._server.api_models import EnvQuery, IdParam, NameParam
from ketch._utils.ids import new_id
from ketch._utils.protocol.spec import MAX_CONTAINERS, Containers, Contract, Int, Seconds
from ketch.exception import InvalidError, NotFoundError

if TYPE_CHECKING:
    from ketch._server.apps import AppManager
    from ketch._server.main import Server


class AutoscalerIn(Contract):
    """The settings to change; those left out keep their current values."""

    min_containers: Containers | None = None
    max_containers: Annotated[Int, Field(ge=1, le=MAX_CONTAINERS)] | None = None
    buffer_containers: Containers | None = None
    scaledown_window: Seconds | None = None


def lookup_app(apps: AppManager, environment: str, name: str, create: bool) -> dict[str, Any]:
    """A deployed app by name; with `create`, one with no functions is deployed when none
    runs (a home for sandboxes, as on Modal), and a later deploy of that name updates it."""
    found = apps.find(environment, name)
    created = False
    if found is None:
        broken = apps.find_broken(environment, name)
        if broken is not None:
            raise InvalidError(
                f"app {name!r} is deployed but did not come back on start "
                f"({apps.broken[broken]['error']}); redeploy it or stop it"
            )
        if not create:
            raise NotFoundError(
                f"app {name!r} is not deployed in environment {environment!r}; deploy it, "
                "or pass create_if_missing=True"
            )
        stored: dict[str, Any] = {
            "name": name,
            "environment": environment,
            "source": None,
            "functions": {},
        }
        app_id = new_id("ap")
        version = apps.store.save_app_version(app_id, name, environment, "deployed", stored)
        apps._activate(app_id, stored, version, "deployed", None, {})
        apps._event(app_id, f"created by App.lookup (version {version}, no functions)")
        found, created = apps.apps[app_id], True
    return {
        "app_id": found["app_id"],
        "name": found["name"],
        "environment": found["environment"],
        "version": found["version"],
        "functions": dict(found["functions"]),
        "created": created,
    }


def handles_router(server: Server) -> APIRouter:
    router = APIRouter(dependencies=[Depends(token_auth(server))])

    @router.post("/v1/apps/{name}/lookup")
    async def lookup(
        name: NameParam, environment: EnvQuery = "main", create_if_missing: bool = False
    ) -> dict[str, Any]:
        return lookup_app(server.apps, environment, name, create_if_missing)

    @router.post("/v1/functions/{function_id}/autoscaler")
    async def update_autoscaler(function_id: IdParam, body: AutoscalerIn) -> dict[str, Any]:
        changes = body.model_dump(exclude_none=True)
        return autoscaler_overrides.update(server.scheduler, server.store, function_id, changes)

    @router.get("/v1/functions/{function_id}/stats")
    async def stats(function_id: IdParam) -> dict[str, int]:
        return autoscaler_overrides.stats(server.scheduler, function_id)

    return router
