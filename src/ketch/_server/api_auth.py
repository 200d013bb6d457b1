"""The management API's access check: the server's token as a Bearer header."""

from __future__ import annotations

import hmac
from collections.abc import Callable
from typing import TYPE_CHECKING

from fastapi import Header, HTTPException

if TYPE_CHECKING:
    from ketch._server.main import Server


def token_auth(server: Server) -> Callable[..., None]:
    """A FastAPI dependency that answers 401 to a request without the server's token."""

    def auth(authorization: str = Header(default="")) -> None:
        given = authorization.removeprefix("Bearer ").strip()
        # Constant time: the token is the only thing between a local user and the API.
        if not hmac.compare_digest(given, server.token):
            raise HTTPException(401, "missing or wrong server token")

    return auth
