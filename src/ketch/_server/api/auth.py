"""The management API's access check: the server's token as a Bearer header."""

from __future__ import annotations

import hmac
import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

if TYPE_CHECKING:
    from ketch._server.main import Server

_DENIED = "missing or wrong server token"
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
    raw = (
        authorization
        if isinstance(authorization, bytes)
        else authorization.encode("latin-1", "replace")
    )
    given = raw.strip().removeprefix(b"Bearer ").strip()
    # Constant time: the token is the only thing between a local user and the API.
    return hmac.compare_digest(given, server.token.encode())


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
                body = json.dumps({"detail": _DENIED}).encode()
                await send(
                    {
                        "type": "http.response.start",
                        "status": 401,
                        "headers": [
                            (b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()),
                            (b"www-authenticate", b"Bearer"),
                        ],
                    }
                )
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)
