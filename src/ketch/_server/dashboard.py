"""The web dashboard (O4): server-rendered pages under `/dashboard` on the management API's
address, reached through a one-time login link from `ketch dashboard`.

Pages are Jinja2 templates; the live parts use htmx (polled fragments, and server-sent
events for logs) and the charts uPlot, both shipped in the package (static/vendor)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jinja2
from fastapi import APIRouter, Depends, Request
from starlette.applications import Starlette
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import HTMLResponse, PlainTextResponse, Response
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles

from ketch._server.api.auth import token_auth
from ketch._server.dashboard_auth import DashboardAuth, SessionGuard
from ketch._server.dashboard_series import Series, server_series
from ketch.exception import Error, InvalidError, NotFoundError

if TYPE_CHECKING:
    from ketch._server.main import Server

HERE = Path(__file__).parent
PREFIX = "/dashboard"


def _clock(ts: float | None) -> str:
    return "-" if ts is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


def _clock_time(ts: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(ts))


def _uptime(seconds: float) -> str:
    minutes, _ = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    if days:
        return f"{days} d {hours} h {minutes} min"
    if hours:
        return f"{hours} h {minutes} min"
    return f"{minutes} min" if minutes else f"{int(seconds)} s"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 1:
        return f"{seconds * 1000:.1f} ms"
    if seconds < 120:
        return f"{seconds:.2f} s"
    return f"{seconds / 60:.1f} min"


def _size(n: int | None) -> str:
    if n is None:
        return "-"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"


class Views:
    """Renders the templates with what every page needs (its CSRF token, the nav)."""

    def __init__(self, server: Server, auth: DashboardAuth, series: Series) -> None:
        self.server = server
        self.auth = auth
        self.series = series
        self.env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(HERE / "templates" / "dashboard"),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.env.filters.update(
            clock=_clock, clock_time=_clock_time, duration=_duration, size=_size, uptime=_uptime
        )

    def render(
        self,
        request: Request,
        template: str,
        *,
        status: int = 200,
        headers: dict[str, str] | None = None,
        **context: Any,
    ) -> HTMLResponse:
        sid = request.scope.get("state", {}).get("dashboard_session", "")
        text = self.env.get_template(template).render(
            root=PREFIX, csrf=self.auth.csrf(sid) if sid else "", **context
        )
        return HTMLResponse(
            text, status_code=status, headers={"cache-control": "no-store", **(headers or {})}
        )

    def denied_page(self, status: int, message: str) -> bytes:
        return (
            self.env.get_template("denied.html")
            .render(root=PREFIX, code=status, message=message, csrf="")
            .encode()
        )


def dashboard_router(server: Server) -> APIRouter:
    """The route that hands out login links (server token required) and the dashboard."""
    auth = DashboardAuth(server.token)
    series = server_series(server)
    views = Views(server, auth, series)
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass  # built outside the server (a test of the routes): sampled on demand only
    else:
        series.start()

    router = APIRouter()

    @router.post("/v1/dashboard/login", dependencies=[Depends(token_auth(server))])
    async def login_link(request: Request) -> dict[str, Any]:
        token = auth.new_login()
        base = str(request.base_url).rstrip("/")
        return {"url": f"{base}{PREFIX}/login?token={token}", "expires_in": auth.login_ttl}

    router.routes.append(Mount(PREFIX, app=_dashboard_app(server, views)))
    return router


def _dashboard_app(server: Server, views: Views) -> SessionGuard:
    from ketch._server.dashboard_live import live_routes
    from ketch._server.dashboard_pages import page_routes

    async def on_error(request: Request, exc: Exception) -> Response:
        status = (
            404 if isinstance(exc, NotFoundError) else 400 if isinstance(exc, InvalidError) else 500
        )
        message = str(exc) or type(exc).__name__
        if request.headers.get("hx-request"):
            # htmx shows this text in the page's notice area (dashboard.js).
            return PlainTextResponse(message, status_code=status)
        return views.render(request, "error.html", status=status, message=message)

    async def on_http(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        message = "no such dashboard page" if exc.status_code == 404 else str(exc.detail)
        if request.headers.get("hx-request"):
            return PlainTextResponse(message, status_code=exc.status_code)
        return views.render(request, "error.html", status=exc.status_code, message=message)

    routes = [
        *page_routes(server, views),
        *live_routes(server, views),
        Mount("/static", app=StaticFiles(directory=HERE / "static"), name="static"),
    ]
    app = Starlette(
        routes=routes, exception_handlers={Error: on_error, StarletteHTTPException: on_http}
    )
    return SessionGuard(
        app,
        views.auth,
        open_paths=frozenset({"/login"}),
        open_prefix="/static/",
        denied=views.denied_page,
    )
