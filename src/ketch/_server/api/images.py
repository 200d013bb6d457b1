"""Management API routes for built images: `GET /v1/images`, `DELETE /v1/images/{prefix}`,
`POST /v1/images/prune` (the server's token only, as every management route)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Depends, Path, Query

from ketch._server.api.auth import token_auth
from ketch._server.image_store import ImageStore
from ketch.exception import InvalidError
from ketch.image import hash_build_spec

if TYPE_CHECKING:
    from ketch._server.main import Server

# What a prefix may hold is `ImageStore.resolve`'s to say, in words.
PrefixParam = Annotated[str, Path(min_length=1, max_length=64)]


def image_users(server: Server) -> dict[str, list[dict[str, str]]]:
    """Image hash -> the functions that use it: those of running apps (ephemeral ones
    included) and those of every deployed app's current version (broken ones too, which
    a restart or redeploy would build again)."""
    users: dict[str, list[dict[str, str]]] = {}
    seen: set[tuple[str, str, str]] = set()

    def add(image_hash: str, app_id: str, app: str, env: str, tag: str, state: str) -> None:
        if (image_hash, app_id, tag) not in seen:
            seen.add((image_hash, app_id, tag))
            users.setdefault(image_hash, []).append(
                {"app": app, "app_id": app_id, "environment": env, "function": tag, "state": state}
            )

    for fdef in server.scheduler.functions.values():
        state = server.apps.apps.get(fdef.app_id, {}).get("state", "running")
        add(fdef.image.hash, fdef.app_id, fdef.app_name, fdef.environment, fdef.tag, state)
    for row, text in server.store.live_apps():
        with contextlib.suppress(ValueError, KeyError, TypeError, AttributeError):
            stored = json.loads(text)
            for tag, fspec in stored["functions"].items():
                image_hash = hash_build_spec(fspec["image"])
                add(image_hash, row["app_id"], row["name"], row["environment"], tag, "deployed")
    return users


def _store(server: Server) -> ImageStore:
    images, cache = server.builder.cache_dir, server.builder.rootfs.cache
    # The default cache (<KETCH_HOME>/rootfs) is this server's own; KETCH_ROOTFS_CACHE's
    # may be shared with other servers.
    return ImageStore(images, cache, shared_cache=cache != images.parent / "rootfs")


def _not_building(server: Server) -> None:
    if server.builder.building:
        raise InvalidError("an image build is under way; remove images once it has ended")


def image_router(server: Server) -> APIRouter:
    router = APIRouter(dependencies=[Depends(token_auth(server))])

    @router.get("/v1/images")
    async def list_images() -> dict[str, Any]:
        return await asyncio.to_thread(_store(server).listing, image_users(server))

    @router.delete("/v1/images/{prefix}")
    async def remove_image(
        prefix: PrefixParam, force: bool = False, dry_run: bool = False
    ) -> dict[str, Any]:
        store = _store(server)
        users = image_users(server)
        entry = store.resolve(prefix, store.entries(users))
        if entry.users and not force:
            names = ", ".join(f"{u['app']}::{u['function']}" for u in entry.users[:5])
            raise InvalidError(
                f"image {entry.hash[:12]} is used by {names}; stop or redeploy those first, "
                "or pass --force (their containers then fail to start until rebuilt)"
            )
        _not_building(server)
        return await asyncio.to_thread(store.remove, entry, dry_run=dry_run)

    @router.post("/v1/images/prune")
    async def prune_images(
        dry_run: bool = False, bases: Annotated[bool, Query()] = False
    ) -> dict[str, Any]:
        _not_building(server)
        users = image_users(server)
        return await asyncio.to_thread(_store(server).prune, users, bases=bases, dry_run=dry_run)

    return router
