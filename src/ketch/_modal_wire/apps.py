"""RPCs about apps, environments and logs: what `modal run` calls around its functions."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from grpclib.const import Status
from grpclib.exceptions import GRPCError

from ketch._modal_wire.servicer import Ctx, Handlers
from ketch._modal_wire.state import WireApp, new_id

if TYPE_CHECKING:
    from ketch._modal_wire.core import Wire

# Modal's image builder versions that both supported clients know (ImageBuilderVersion).
IMAGE_BUILDER_VERSION = "2025.06"
# A log poll never holds a request longer than this, whatever the client asks.
_MAX_LOG_WAIT = 55.0


def register(wire: Wire, handlers: Handlers) -> None:
    pb2 = wire.pb2
    empty = wire.empty

    async def client_hello(req: Any, ctx: Ctx) -> Any:
        return pb2.ClientHelloResponse(image_builder_version=IMAGE_BUILDER_VERSION)

    async def environment_get_or_create(req: Any, ctx: Ctx) -> Any:
        name = req.deployment_name or wire.environment
        metadata = pb2.EnvironmentMetadata(name=name)
        metadata.settings.image_builder_version = IMAGE_BUILDER_VERSION
        metadata.settings.webhook_suffix = "ketch"
        return pb2.EnvironmentGetOrCreateResponse(
            environment_id=wire.environment_id(name), metadata=metadata
        )

    async def app_create(req: Any, ctx: Ctx) -> Any:
        app = WireApp(
            app_id=new_id("ap"),
            description=req.description,
            environment=req.environment_name or wire.environment,
            client_id=req.client_id,
            state=req.app_state or pb2.APP_STATE_EPHEMERAL,
        )
        wire.apps[app.app_id] = app
        return pb2.AppCreateResponse(app_id=app.app_id, app_page_url="", app_logs_url="")

    async def app_heartbeat(req: Any, ctx: Ctx) -> Any:
        wire.app(req.app_id)
        return empty()

    async def app_set_objects(req: Any, ctx: Ctx) -> Any:
        app = wire.app(req.app_id)
        app.function_ids.update(dict(req.indexed_object_ids))
        return empty()

    async def app_publish(req: Any, ctx: Ctx) -> Any:
        app = wire.app(req.app_id)
        app.function_ids.update(dict(req.function_ids))
        app.class_ids.update(dict(req.class_ids))
        await wire.publish(app, req.name, req.app_state or app.state)
        return pb2.AppPublishResponse(url="", deployed_at=app.deployed_at or time.time())

    async def app_client_disconnect(req: Any, ctx: Ctx) -> Any:
        app = wire.apps.get(req.app_id)
        if app is not None and app.state in (pb2.APP_STATE_EPHEMERAL, pb2.APP_STATE_INITIALIZING):
            await wire.stop_app(app)
        return empty()

    async def app_get_logs(req: Any, ctx: Ctx) -> AsyncIterator[Any]:
        app = wire.app(req.app_id)
        after = _entry_number(req.last_entry_id)
        deadline = time.monotonic() + min(max(req.timeout, 0.0), _MAX_LOG_WAIT)
        while True:
            fresh = [e for e in app.logs[after:] if _wanted(e, req)]
            if fresh or app.done or time.monotonic() >= deadline:
                break
            await app.log_signal.wait(deadline - time.monotonic())
        last = len(app.logs)
        for entry in fresh:
            batch = pb2.TaskLogsBatch(
                task_id=entry.task_id, function_id=entry.function_id, entry_id=str(entry.entry_id)
            )
            batch.items.append(
                pb2.TaskLogs(data=entry.data, file_descriptor=entry.fd, timestamp=entry.timestamp)
            )
            yield batch
        if fresh or last > after:
            yield pb2.TaskLogsBatch(entry_id=str(last))
        if app.done:
            yield pb2.TaskLogsBatch(app_done=True)

    handlers.unary.update(
        ClientHello=client_hello,
        EnvironmentGetOrCreate=environment_get_or_create,
        AppCreate=app_create,
        AppHeartbeat=app_heartbeat,
        AppSetObjects=app_set_objects,
        AppPublish=app_publish,
        AppClientDisconnect=app_client_disconnect,
    )
    handlers.streaming.update(AppGetLogs=app_get_logs)


def _entry_number(text: str) -> int:
    head = text.split("-", 1)[0]
    return int(head) if head.isdigit() else 0


def _wanted(entry: Any, req: Any) -> bool:
    if req.function_id and entry.function_id != req.function_id:
        return False
    return not (req.task_id and entry.task_id != req.task_id)


def missing(kind: str, object_id: str) -> GRPCError:
    return GRPCError(Status.NOT_FOUND, f"{kind} {object_id!r} not found on this ketch server")
