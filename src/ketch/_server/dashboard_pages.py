"""The dashboard's pages, one stable URL each: apps, an app, a function, containers, calls,
secrets, tokens, volumes, dicts, queues and the server. Read-only; the actions are in
`dashboard_live`."""

from __future__ import annotations

import asyncio
import os
import time
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

import ketch
from ketch._server import dashboard_data as data
from ketch._server.logs import LogFilter
from ketch._server.volumes import DIRECTORY, FIFO, FILE, SOCKET, SYMLINK, list_entries
from ketch._utils.labels import validate_name
from ketch.exception import InvalidError, NotFoundError

if TYPE_CHECKING:
    from ketch._server.dashboard import Views
    from ketch._server.main import Server

_CALLS = 50  # recent calls on an app's or a function's page
_ALL_CALLS = 200
_DICT_KEYS = 200
_CONTAINER_LOG_TAIL = 500
_KINDS = {FILE: "file", DIRECTORY: "directory", SYMLINK: "symlink", FIFO: "fifo", SOCKET: "socket"}

# `?done=` after an action: fixed notices, so no text from a URL is ever shown as a message.
NOTICES = {
    "stop": "The app was stopped.",
    "rollback": "Rolled back: the new version is live.",
    "revoke": "The token was revoked.",
}


def query_env(request: Request) -> str:
    env = request.query_params.get("env") or "main"
    validate_name("environment", env)
    return env


def query_int(
    request: Request, name: str, default: int, *, low: int = 1, high: int = 10_000
) -> int:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise InvalidError(f"{name} must be a whole number, not {raw!r}") from None
    if not low <= value <= high:
        raise InvalidError(f"{name} must be between {low} and {high}")
    return value


def notice(request: Request) -> str | None:
    return NOTICES.get(request.query_params.get("done", ""))


def page_routes(server: Server, views: Views) -> list[Route]:
    auth = views.auth

    async def login(request: Request) -> Response:
        cookie = auth.redeem(request.query_params.get("token", ""))
        if cookie is None:
            return HTMLResponse(
                views.denied_page(
                    401,
                    "this login link is not valid: it was used already, it expired, or it "
                    "belongs to another server. Run `ketch dashboard` for a new one.",
                ),
                status_code=401,
                headers={"cache-control": "no-store"},
            )
        # A page that moves on by itself, not a redirect: a SameSite=Strict cookie is not
        # sent on a redirect that follows a link from another site (a chat, a mail).
        resp = views.render(request, "login.html", next_url="/dashboard/apps")
        resp.headers["set-cookie"] = auth.cookie_header(cookie)
        return resp

    async def logout(request: Request) -> Response:
        auth.end(request.scope["state"]["dashboard_session"])
        # The next page answers 401 and says how to log in again.
        return Response(
            status_code=204,
            headers={"hx-redirect": "/dashboard/apps", "set-cookie": auth.clear_cookie_header()},
        )

    async def index(request: Request) -> Response:
        return RedirectResponse("/dashboard/apps", status_code=303)

    async def apps(request: Request) -> Response:
        show_all = request.query_params.get("all") == "1"
        rows = data.apps_rows(server, include_stopped=show_all)
        return views.render(request, "apps.html", nav="apps", apps=rows, show_all=show_all)

    async def app_page(request: Request) -> Response:
        app_id = request.path_params["app_id"]
        app = data.app_row(server, app_id)
        functions = data.app_functions(server, app_id)
        return views.render(
            request,
            "app.html",
            nav="apps",
            app=app,
            functions=functions,
            containers=server.scheduler.container_rows(app_id),
            calls=data.app_calls(server, app_id, _CALLS),
            history=list(reversed(server.apps.history(app_id))),
            tags=[f["tag"] for f in functions],
            notice=notice(request),
        )

    async def function_page(request: Request) -> Response:
        app_id, tag = request.path_params["app_id"], request.path_params["tag"]
        app = data.app_row(server, app_id)
        function = next((f for f in data.app_functions(server, app_id) if f["tag"] == tag), None)
        if function is None:
            raise NotFoundError(f"app {app['name']!r} has no function {tag!r}")
        containers = [c for c in server.scheduler.container_rows(app_id) if c["function"] == tag]
        return views.render(
            request,
            "function.html",
            nav="apps",
            app=app,
            function=function,
            containers=containers,
            calls=data.app_calls(server, app_id, _CALLS, tag),
        )

    async def containers(request: Request) -> Response:
        return views.render(
            request,
            "containers.html",
            nav="containers",
            containers=server.scheduler.container_rows(),
        )

    async def container_page(request: Request) -> Response:
        cid = request.path_params["cid"]
        row = next((c for c in server.scheduler.container_rows() if c["container_id"] == cid), None)
        app_id = row["app_id"] if row else server.logs.app_of_container(cid)
        if app_id is None:
            raise NotFoundError(f"no container {cid!r} with logs on this server")
        entries = await asyncio.to_thread(
            server.logs.entries, app_id, LogFilter(container=cid), _CONTAINER_LOG_TAIL
        )
        return views.render(
            request,
            "container.html",
            nav="containers",
            cid=cid,
            container=row,
            app_id=app_id,
            entries=entries,
        )

    async def calls(request: Request) -> Response:
        return views.render(
            request, "calls.html", nav="calls", calls=data.all_calls(server, _ALL_CALLS)
        )

    async def call_page(request: Request) -> Response:
        call = data.call_detail(server, request.path_params["call_id"])
        app = data.app_row(server, call["app_id"])
        return views.render(request, "call.html", nav="calls", call=call, app=app)

    async def secrets(request: Request) -> Response:
        env = query_env(request)
        return views.render(
            request,
            "secrets.html",
            nav="secrets",
            env=env,
            envs=data.environments(server),
            secrets=data.secrets(server, env),
        )

    async def tokens(request: Request) -> Response:
        return views.render(
            request,
            "tokens.html",
            nav="tokens",
            tokens=list(reversed(server.store.list_tokens())),
            notice=notice(request),
        )

    async def volumes(request: Request) -> Response:
        env = query_env(request)
        return views.render(
            request,
            "volumes.html",
            nav="volumes",
            env=env,
            envs=data.environments(server),
            volumes=server.apps.volumes.list_named(env),
        )

    async def volume_page(request: Request) -> Response:
        manager = server.apps.volumes
        rec = manager.get(request.path_params["vid"])
        path = request.query_params.get("path") or "/"
        try:
            entries = await asyncio.to_thread(
                list_entries, manager.live_path(rec.volume_id), path, False
            )
        except FileNotFoundError as exc:
            raise NotFoundError(str(exc)) from None
        except OSError as exc:
            raise InvalidError(f"cannot list {path!r}: {exc.strerror or exc}") from None
        entries = [{**e, "kind": _KINDS.get(e["type"], "other")} for e in entries]
        parts = [p for p in path.strip("/").split("/") if p]
        crumbs = [("/" + "/".join(parts[: i + 1]), name) for i, name in enumerate(parts)]
        return views.render(
            request,
            "volume.html",
            nav="volumes",
            volume=rec.as_dict(),
            path="/" + "/".join(parts),
            crumbs=crumbs,
            entries=entries,
        )

    async def dicts(request: Request) -> Response:
        env = query_env(request)
        return views.render(
            request,
            "objects.html",
            nav="dicts",
            kind="dict",
            env=env,
            envs=data.environments(server),
            objects=server.calls.objects.listing("dict", env),
        )

    async def dict_page(request: Request) -> Response:
        obj = data.object_row(server, "dict", request.path_params["oid"])
        limit = query_int(request, "limit", _DICT_KEYS)
        keys = await data.dict_keys(server, obj["object_id"], limit)
        summary = server.calls.objects.dicts.summary(obj["object_id"])
        return views.render(
            request, "dict.html", nav="dicts", obj=obj, keys=keys, summary=summary, limit=limit
        )

    async def queues(request: Request) -> Response:
        env = query_env(request)
        return views.render(
            request,
            "objects.html",
            nav="queues",
            kind="queue",
            env=env,
            envs=data.environments(server),
            objects=server.calls.objects.listing("queue", env),
        )

    async def server_page(request: Request) -> Response:
        return views.render(request, "server.html", nav="server", info=_server_info(server))

    return [
        Route("/login", login),
        Route("/logout", logout, methods=["POST"]),
        Route("/", index),
        Route("/apps", apps),
        Route("/apps/{app_id}", app_page),
        Route("/apps/{app_id}/functions/{tag}", function_page),
        Route("/containers", containers),
        Route("/containers/{cid}", container_page),
        Route("/calls", calls),
        Route("/calls/{call_id}", call_page),
        Route("/secrets", secrets),
        Route("/tokens", tokens),
        Route("/volumes", volumes),
        Route("/volumes/{vid}", volume_page),
        Route("/dicts", dicts),
        Route("/dicts/{oid}", dict_page),
        Route("/queues", queues),
        Route("/server", server_page),
    ]


def _server_info(server: Server) -> dict[str, Any]:
    sched = server.scheduler
    states: dict[str, int] = {}
    for row in sched.container_rows():
        states[row["state"]] = states.get(row["state"], 0) + 1
    cfg = server.config
    return {
        "version": ketch.__version__,
        "pid": os.getpid(),
        "backend": os.environ.get("KETCH_BACKEND", "local"),
        "backend_class": type(sched.backend).__name__,
        "started": server.started,
        "uptime": time.time() - server.started,
        "home": str(server.home),
        "host": cfg.server_host,
        "gateway": server.web.gateway_url(),
        "apps": len(server.apps.apps),
        "containers": states,
        "queued": sum(len(p.queue) for p in sched.pools.values()),
        "counters": dict(sorted(sched.counters.items())),
        "fork_server": getattr(cfg, "fork_server", None),
    }
