"""Dashboard sessions: one-time login tokens, signed session cookies, CSRF tokens, and the
ASGI guard that answers 401 to any dashboard request without a session."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from starlette.requests import cookie_parser

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

LOGIN_TTL = 120.0  # seconds a printed login URL stays usable (once)
SESSION_TTL = 12 * 3600.0
_MAX_PENDING = 1000  # unredeemed login tokens kept; the oldest go first
CSRF_HEADER = "x-csrf-token"
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

# Everything a dashboard response carries: the pages load nothing from elsewhere, run no
# inline script, and may not be framed (clickjacking of the rollback and stop buttons).
SECURITY_HEADERS = [
    (
        b"content-security-policy",
        b"default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        b"connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
    ),
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
]


class DashboardAuth:
    """Sessions are stateless signed cookies: `<id>.<expiry>.<hmac>` under a key derived
    from the server's token, so a cookie means nothing to another server (or to this one
    once its token changes). Login tokens are random, kept hashed, and work once."""

    def __init__(
        self,
        server_token: str,
        *,
        clock: Callable[[], float] = time.time,
        login_ttl: float = LOGIN_TTL,
        session_ttl: float = SESSION_TTL,
    ) -> None:
        self._key = hmac.new(
            server_token.encode(), b"ketch dashboard session v1", hashlib.sha256
        ).digest()
        self._clock = clock
        self.login_ttl = login_ttl
        self.session_ttl = session_ttl
        self._pending: dict[str, float] = {}  # sha256 of a login token -> its expiry
        self._ended: dict[str, float] = {}  # logged-out session ids -> their expiry
        # Cookies are scoped by host, not port: servers side by side on 127.0.0.1 each
        # need a name of their own, or logging in to one would log out of the other.
        self.cookie_name = "ketch_dashboard_" + self._mac("cookie-name")[:12]

    def _mac(self, text: str) -> str:
        return hmac.new(self._key, text.encode(), hashlib.sha256).hexdigest()

    # -- login tokens ---------------------------------------------------------------------
    def new_login(self) -> str:
        now = self._clock()
        self._pending = {h: t for h, t in self._pending.items() if t > now}
        while len(self._pending) >= _MAX_PENDING:
            del self._pending[next(iter(self._pending))]
        token = secrets.token_urlsafe(32)
        self._pending[_digest(token)] = now + self.login_ttl
        return token

    def redeem(self, token: str) -> str | None:
        """A new session cookie value for a valid, unused, unexpired login token."""
        expiry = self._pending.pop(_digest(token), None)
        if expiry is None or expiry < self._clock():
            return None
        sid = secrets.token_urlsafe(16)
        until = int(self._clock() + self.session_ttl)
        return f"{sid}.{until}.{self._mac(f'{sid}.{until}')}"

    # -- sessions -------------------------------------------------------------------------
    def session(self, cookie: str | None) -> str | None:
        """The session id of a cookie value this server signed and that is still live."""
        if not cookie:
            return None
        parts = cookie.split(".")
        if len(parts) != 3 or not parts[1].isdigit():
            return None
        sid, until, mac = parts
        if not hmac.compare_digest(mac, self._mac(f"{sid}.{until}")):
            return None
        if int(until) < self._clock() or sid in self._ended:
            return None
        return sid

    def end(self, sid: str) -> None:
        now = self._clock()
        self._ended = {s: t for s, t in self._ended.items() if t > now}
        self._ended[sid] = now + self.session_ttl

    def csrf(self, sid: str) -> str:
        return self._mac(f"csrf.{sid}")

    def csrf_ok(self, sid: str, given: str) -> bool:
        return hmac.compare_digest(given.encode(), self.csrf(sid).encode())

    def cookie_header(self, value: str) -> str:
        # Path-scoped to the dashboard; never readable by page scripts; never sent on a
        # request another site starts.
        return (
            f"{self.cookie_name}={value}; Path=/dashboard; HttpOnly; SameSite=Strict; "
            f"Max-Age={int(self.session_ttl)}"
        )

    def clear_cookie_header(self) -> str:
        return f"{self.cookie_name}=; Path=/dashboard; HttpOnly; SameSite=Strict; Max-Age=0"


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def cookie_from(scope: Scope, name: str) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == b"cookie":
            # Starlette's parser: lenient with what other sites' cookies look like.
            found = cookie_parser(value.decode("latin-1")).get(name)
            if found is not None:
                return found
    return None


def header(scope: Scope, name: bytes) -> str:
    return next((v.decode("latin-1") for k, v in scope.get("headers", ()) if k == name), "")


class SessionGuard:
    """Wraps the dashboard app: no session, 401 (the login page aside); a state-changing
    request without the session's CSRF token, 403. Adds the security headers and a
    `Server-Timing` header with the time the server spent before answering."""

    def __init__(
        self,
        app: ASGIApp,
        auth: DashboardAuth,
        *,
        open_paths: frozenset[str],
        open_prefix: str,
        denied: Callable[[int, str], bytes],
    ) -> None:
        self.app = app
        self.auth = auth
        self.open_paths = open_paths
        self.open_prefix = open_prefix  # the static files: public libraries and styles
        self.denied = denied

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                spent = (time.perf_counter() - started) * 1000
                message["headers"] = [
                    *message.get("headers", ()),
                    *SECURITY_HEADERS,
                    (b"server-timing", f"app;dur={spent:.1f}".encode()),
                ]
            await send(message)

        path = scope["path"].removeprefix(scope.get("root_path", "")) or "/"
        if path not in self.open_paths and not path.startswith(self.open_prefix):
            sid = self.auth.session(cookie_from(scope, self.auth.cookie_name))
            if sid is None:
                await _answer(
                    send_with_headers,
                    401,
                    self.denied(
                        401, "no dashboard session: run `ketch dashboard` for a login link"
                    ),
                )
                return
            if scope["method"] not in _SAFE_METHODS and not self.auth.csrf_ok(
                sid, header(scope, CSRF_HEADER.encode())
            ):
                await _answer(
                    send_with_headers,
                    403,
                    self.denied(403, "this action needs the page's CSRF token; reload the page"),
                )
                return
            scope.setdefault("state", {})["dashboard_session"] = sid
        await self.app(scope, receive, send_with_headers)


async def _answer(send: Send, status: int, body: bytes) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"text/html; charset=utf-8"),
                (b"content-length", str(len(body)).encode()),
                (b"cache-control", b"no-store"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
