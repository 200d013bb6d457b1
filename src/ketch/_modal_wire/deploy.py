"""RPCs of deployed apps: `modal deploy`, `modal app list | stop`, `Function.from_name`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from grpclib.const import Status
from grpclib.exceptions import GRPCError

from ketch._modal_wire.servicer import Ctx, Handlers
from ketch._modal_wire.state import WireApp

if TYPE_CHECKING:
    from ketch._modal_wire.core import Wire


def register(wire: Wire, handlers: Handlers) -> None:
    pb2 = wire.pb2
    empty = wire.empty

    def lifecycle(app: WireApp) -> Any:
        return pb2.AppLifecycle(
            app_state=app.state,
            created_at=app.created,
            deployed_at=app.deployed_at,
            stopped_at=app.stopped_at,
        )

    def environment(name: str) -> str:
        return name or wire.environment

    async def app_get_by_deployment_name(req: Any, ctx: Ctx) -> Any:
        env = environment(req.environment_name)
        app = wire.deployed_app(env, req.name)
        if app is not None:
            return pb2.AppGetByDeploymentNameResponse(
                app_id=app.app_id, environment_name=env, lifecycle=lifecycle(app)
            )
        previous = wire.previous.get((env, req.name))
        if previous is not None and previous in wire.apps:
            stopped = wire.apps[previous]
            return pb2.AppGetByDeploymentNameResponse(
                previous_app_id=previous, environment_name=env, lifecycle=lifecycle(stopped)
            )
        return pb2.AppGetByDeploymentNameResponse(environment_name=env)

    async def app_get_layout(req: Any, ctx: Ctx) -> Any:
        return pb2.AppGetLayoutResponse(app_layout=wire.layout(wire.app(req.app_id)))

    async def app_get_lifecycle(req: Any, ctx: Ctx) -> Any:
        return pb2.AppGetLifecycleResponse(lifecycle=lifecycle(wire.app(req.app_id)))

    async def app_list(req: Any, ctx: Ctx) -> Any:
        env = environment(req.environment_name)
        response = pb2.AppListResponse()
        for app in wire.apps.values():
            if app.environment != env:
                continue
            tasks = sum(1 for c in wire.containers.values() if c.app_id == app.app_id)
            response.apps.append(
                pb2.AppListResponse.AppListItem(
                    app_id=app.app_id,
                    description=app.name or app.description,
                    state=app.state,
                    created_at=app.created,
                    stopped_at=app.stopped_at,
                    n_running_tasks=tasks,
                    name=app.name,
                )
            )
        return response

    async def app_stop(req: Any, ctx: Ctx) -> Any:
        app = wire.app(req.app_id)
        if not app.done:
            await wire.stop_app(app)
        return empty()

    async def task_list(req: Any, ctx: Ctx) -> Any:
        response = pb2.TaskListResponse()
        for c in wire.containers.values():
            if req.app_id and c.app_id != req.app_id:
                continue
            app = wire.apps.get(c.app_id)
            response.tasks.append(
                pb2.TaskStats(
                    task_id=c.task_id,
                    app_id=c.app_id,
                    app_description=app.description if app else "",
                    started_at=c.started_at,
                )
            )
        return response

    async def function_get(req: Any, ctx: Ctx) -> Any:
        env = environment(req.environment_name)
        app = wire.deployed_app(env, req.app_name)
        if app is None:
            raise GRPCError(
                Status.NOT_FOUND,
                f"no app named '{req.app_name}' is deployed in environment '{env}' on this "
                "ketch server",
            )
        function_id = app.function_ids.get(req.object_tag)
        fn = wire.functions.get(function_id or "")
        if fn is None or fn.definition is None:
            raise GRPCError(
                Status.NOT_FOUND,
                f"the app '{req.app_name}' has no function '{req.object_tag}'",
            )
        response = pb2.FunctionGetResponse(
            function_id=fn.function_id, handle_metadata=fn.handle_metadata
        )
        # 1.6.x reads the function's description from `function` (a FunctionData).
        if fn.function_data is not None and "function" in response.DESCRIPTOR.fields_by_name:
            response.function.CopyFrom(fn.function_data)
        return response

    handlers.unary.update(
        AppGetByDeploymentName=app_get_by_deployment_name,
        AppGetLayout=app_get_layout,
        AppGetLifecycle=app_get_lifecycle,
        AppList=app_list,
        AppStop=app_stop,
        TaskList=task_list,
        FunctionGet=function_get,
    )
