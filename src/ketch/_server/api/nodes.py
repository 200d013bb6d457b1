"""Management API route for the machines containers run on (`ketch node list`, G5)."""

from __future__ import annotations

import asyncio
import collections
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Depends

from ketch._server.api.auth import token_auth

if TYPE_CHECKING:
    from ketch._server.main import Server


def node_rows(
    nodes: list[dict[str, Any]], container_nodes: list[str | None]
) -> list[dict[str, Any]]:
    """The backend's nodes, each with how many of this server's containers run on it."""
    running = collections.Counter(n for n in container_nodes if n is not None)
    return [{**node, "containers": running.get(node["node_id"], 0)} for node in nodes]


def node_router(server: Server) -> APIRouter:
    router = APIRouter(dependencies=[Depends(token_auth(server))])

    @router.get("/v1/nodes")
    async def list_nodes() -> list[dict[str, Any]]:
        backend = server.scheduler.backend
        # A cluster backend asks its cluster (a network round trip): off the event loop.
        nodes = await asyncio.to_thread(backend.nodes)
        placed = [row["node"] for row in server.scheduler.container_rows()]
        return node_rows(nodes, placed)

    return router
