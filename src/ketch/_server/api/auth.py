"""The management API's access check: the server's token as a Bearer header.

A container's credential (SPEC I4) is refused everywhere (403) but on the volume and
sandbox routes, which the SDK inside a container uses for the volumes and sandboxes of its
own environment."""

from __future__ import annotations

import hmac
import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from ketch._server.credentials import Scope

if TYPE_CHECKING:
    from ketch._server.main import Server

_DENIED = "missing or wrong server token"
_CONTAINER_DENIED = "a container's credential cannot use this route: it needs the server token"
# The routes a container's credential may use, each held to the credential's environment.
CONTAINER_PREFIXES = ("/v1/volumes", "/v1/sandboxes")
# In the OpenAPI document as a security scheme, so that generated clients send it.
_BEARER = HTTPBearer(
    auto_error=False,
    scheme_name="serverToken",
    description="The server's token, from the file `token` in KETCH_HOME.",
)


def token_ok(server: Server, authorization: str | bytes) -> bool:
    """Whether an Authorization header value carries the server's token.

    Compared as bytes: the header may hold any octets (a str of them, decoded as latin-1),
    and `hmac.compare_digest` refuses non-ASCII text rather than saying no."""
    # Constant time: the token is the only thing between a local user and the API.
    return hmac.compare_digest(_bearer(authorization), server.token.encode())


def credential_scope(server: Server, authorization: str | bytes) -> Scope | None:
    """The scope of the container credential an Authorization header carries, if any."""
    scheduler = getattr(server, "scheduler", None)  # None until the server runs
    return None if scheduler is None else scheduler.credentials.lookup(_bearer(authorization))


def _bearer(authorization: str | bytes) -> bytes:
    raw = (
        authorization
        if isinstance(authorization, bytes)
        else authorization.encode("latin-1", "replace")
    )
    return raw.strip().removeprefix(b"Bearer ").strip()


class TokenAuth:
    """A FastAPI dependency that answers 401 to a request without the server's token.

    A class, so that `TokenGuard` can tell the routes that use it."""

    def __init__(self, server: Server) -> None:
        self.server = server

    def __call__(
        self, request: Request, _: HTTPAuthorizationCredentials | None = Depends(_BEARER)
    ) -> None:
        # The raw header, not what HTTPBearer parsed: it only documents the scheme.
        if not token_ok(self.server, request.headers.get("authorization", "")):
            raise HTTPException(401, _DENIED, headers={"WWW-Authenticate": "Bearer"})


def token_auth(server: Server) -> TokenAuth:
    return TokenAuth(server)


class CallerAuth:
    """A FastAPI dependency for the routes a container may use too: None for the server
    token, the scope of a live container credential, 401 for anything else. The route
    then holds a scope to its environment (`check_environment`)."""

    def __init__(self, server: Server) -> None:
        self.server = server

    def __call__(
        self, request: Request, _: HTTPAuthorizationCredentials | None = Depends(_BEARER)
    ) -> Scope | None:
        header = request.headers.get("authorization", "")
        if token_ok(self.server, header):
            return None
        scope = credential_scope(self.server, header)
        if scope is None:
            raise HTTPException(401, _DENIED, headers={"WWW-Authenticate": "Bearer"})
        return scope


def check_environment(caller: Scope | None, environment: str) -> None:
    """403 unless the caller (None: the server token) may reach `environment`."""
    if caller is not None and caller.environment != environment:
        message = (
            f"container {caller.container_id}'s credential reaches environment "
            f"{caller.environment!r} only, not {environment!r}"
        )
        raise HTTPException(403, {"type": "AuthError", "message": message})


ASGIApp = Callable[..., Any]


class TokenGuard:
    """Checks the token of a protected route before anything reads the request's body:
    FastAPI parses a JSON body before it runs a route's dependencies, so without this an
    unauthenticated peer could make the server buffer and decode whatever it sends."""

    def __init__(
        self, app: ASGIApp, server: Server, protected: Callable[[dict[str, Any]], bool]
    ) -> None:
        self.app = app
        self.server = server
        self.protected = protected

    async def __call__(self, scope: dict[str, Any], receive: ASGIApp, send: ASGIApp) -> None:
        if scope["type"] == "http" and self.protected(scope):
            value = next((v for k, v in scope.get("headers", ()) if k == b"authorization"), b"")
            if not token_ok(self.server, value):
                container = credential_scope(self.server, value) is not None
                if not (container and _container_route(scope.get("path", ""))):
                    await _refuse(send, 403 if container else 401)
                    return
        await self.app(scope, receive, send)


def _container_route(path: str) -> bool:
    return any(path == p or path.startswith(p + "/") for p in CONTAINER_PREFIXES)


async def _refuse(send: ASGIApp, status: int) -> None:
    body = json.dumps({"detail": _DENIED if status == 401 else _CONTAINER_DENIED}).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
    ]
    if status == 401:
        headers.append((b"www-authenticate", b"Bearer"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
