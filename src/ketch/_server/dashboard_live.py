"""The dashboard's live parts and actions: polled fragments of an app's page, logs as
server-sent events, chart data, and the state-changing actions (rollback, stop, tokens),
which call what the management API's routes call."""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from ketch._server import dashboard_data as data
from ketch._server.dashboard_pages import query_int
from ketch._server.logs import SOURCES, Follower, LogFilter
from ketch.exception import InvalidError, NotFoundError

if TYPE_CHECKING:
    from ketch._server.dashboard import Views
    from ketch._server.main import Server

_LOG_TAIL = 200  # stored lines a log view starts with
_KEEPALIVE = 15.0  # seconds between comments on a quiet stream, so dead readers are noticed


def _log_filter(
    request: Request, *, container: str | None = None
) -> tuple[LogFilter, dict[str, Any]]:
    """The log view's filters from the query: a function and the streams ticked. The form
    also sends `stream=-`, so that no stream ticked shows nothing rather than everything."""
    function = request.query_params.get("function") or None
    given = request.query_params.getlist("stream")
    streams = [s for s in given if s and s != "-"]
    bad = [s for s in streams if s not in SOURCES]
    if bad:
        raise InvalidError(f"unknown log stream {bad[0]!r} (use {', '.join(SOURCES)})")
    sources = streams or (["-"] if "-" in given else None)
    query = {"function": function or "", "stream": sources or []}
    return LogFilter(function=function, sources=sources, container=container), query


def _sse(event: str, payload: str, event_id: str | None = None) -> bytes:
    # One event's data must not hold a line break: each line would be a field of its own.
    text = payload.replace("\r", " ").replace("\n", " ")
    head = f"id: {event_id}\n" if event_id else ""
    return f"{head}event: {event}\ndata: {text}\n\n".encode()


def live_routes(server: Server, views: Views) -> list[Route]:
    line_template = views.env.get_template("_log_line.html")

    def log_stream(app_id: str, match: LogFilter, last_id: str | None) -> StreamingResponse:
        since = None
        if last_id:
            # A reconnecting EventSource says what it saw last: resume after it.
            with contextlib.suppress(ValueError):
                since = float(last_id) if math.isfinite(float(last_id)) else None
        # Subscribed before the stored entries are read, in one step of the loop: no entry
        # falls between the two or comes twice.
        follower = Follower(match)
        server.logs.subscribe(app_id, follower)
        stored = server.logs.entries(app_id, match, _LOG_TAIL)
        if since is not None:
            stored = [e for e in stored if e["ts"] > since]

        def event(entry: dict[str, Any]) -> bytes:
            return _sse("log", line_template.render(e=entry), f"{entry['ts']:.6f}")

        async def body() -> AsyncIterator[bytes]:
            try:
                yield b"retry: 2000\n\n"
                for entry in stored:
                    yield event(entry)
                while True:
                    try:
                        entry_ = await asyncio.wait_for(follower.queue.get(), _KEEPALIVE)
                    except TimeoutError:
                        yield b": keepalive\n\n"
                        continue
                    if entry_ is None:
                        yield _sse("note", "the log view fell behind; reload the page")
                        return
                    if since is None or entry_["ts"] > since:
                        yield event(entry_)
            finally:
                follower.closed = True
                server.logs.unsubscribe(app_id, follower)

        return StreamingResponse(
            body(),
            media_type="text/event-stream",
            headers={"cache-control": "no-store", "x-accel-buffering": "no"},
        )

    async def app_logs(request: Request) -> Response:
        app_id = request.path_params["app_id"]
        data.app_row(server, app_id)
        match, _ = _log_filter(request)
        return log_stream(app_id, match, request.headers.get("last-event-id"))

    async def container_logs(request: Request) -> Response:
        cid = request.path_params["cid"]
        live = server.scheduler.containers.get(cid)
        app_id = live.pool.function.app_id if live else server.logs.app_of_container(cid)
        if app_id is None:
            raise NotFoundError(f"no container {cid!r} with logs on this server")
        match, _ = _log_filter(request, container=cid)
        return log_stream(app_id, match, request.headers.get("last-event-id"))

    async def log_panel(request: Request) -> Response:
        """The log view with its filters applied: a new event stream replaces the old."""
        app_id = request.path_params["app_id"]
        data.app_row(server, app_id)
        _, query = _log_filter(request)
        return views.render(
            request, "_log_panel.html", app_id=app_id, query=urlencode(query, doseq=True)
        )

    async def app_live(request: Request) -> Response:
        app_id = request.path_params["app_id"]
        return views.render(
            request,
            "_app_live.html",
            app=data.app_row(server, app_id),
            functions=data.app_functions(server, app_id),
            containers=server.scheduler.container_rows(app_id),
            calls=data.app_calls(server, app_id, 50),
        )

    async def series(request: Request) -> Response:
        app = data.app_row(server, request.path_params["app_id"])
        await views.series.fresh()
        out = views.series.chart_data((app["name"], request.path_params["tag"]))
        return JSONResponse(out, headers={"cache-control": "no-store"})

    # -- actions (the guard has checked the session's CSRF token) --------------------------
    def done(request: Request, url: str) -> Response:
        # htmx follows HX-Redirect; a plain client gets an ordinary redirect.
        if request.headers.get("hx-request"):
            return Response(status_code=204, headers={"hx-redirect": url})
        return Response(status_code=303, headers={"location": url})

    async def rollback(request: Request) -> Response:
        app_id = request.path_params["app_id"]
        data.app_row(server, app_id)
        version = (
            query_int(request, "version", 0, low=1, high=10**9)
            if request.query_params.get("version")
            else None
        )
        await server.apps.rollback(app_id, version, lambda line: None)
        return done(request, f"/dashboard/apps/{app_id}?done=rollback")

    async def stop(request: Request) -> Response:
        app_id = request.path_params["app_id"]
        data.app_row(server, app_id)
        server.apps.stop(app_id)
        return done(request, f"/dashboard/apps/{app_id}?done=stop")

    async def create_token(request: Request) -> Response:
        from ketch._gateway.auth import hash_secret, new_token

        token_id, secret = new_token()
        server.store.add_token(token_id, hash_secret(secret))
        server.web.reload_tokens()
        # Shown this once, in the answer to the request that made it; only its hash stays.
        return views.render(request, "_token_created.html", token_id=token_id, secret=secret)

    async def revoke_token(request: Request) -> Response:
        token_id = request.path_params["token_id"]
        if not server.store.revoke_token(token_id):
            raise NotFoundError(f"no live proxy token {token_id!r}")
        server.web.reload_tokens()
        return done(request, "/dashboard/tokens?done=revoke")

    return [
        Route("/apps/{app_id}/live", app_live),
        Route("/apps/{app_id}/logs/panel", log_panel),
        Route("/apps/{app_id}/logs/stream", app_logs),
        Route("/containers/{cid}/logs/stream", container_logs),
        Route("/apps/{app_id}/functions/{tag}/series", series),
        Route("/apps/{app_id}/rollback", rollback, methods=["POST"]),
        Route("/apps/{app_id}/stop", stop, methods=["POST"]),
        Route("/tokens", create_token, methods=["POST"]),
        Route("/tokens/{token_id}/revoke", revoke_token, methods=["POST"]),
    ]
