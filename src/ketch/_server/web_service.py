"""The server's web glue: listeners, the route table, and the resolver that turns a
request head into a container address (auth, rate limit, cold-start queueing)."""

from __future__ import annotations

import contextlib
import errno
import logging
import math
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ketch._gateway.auth import CREDENTIAL_HEADERS, check, credentials
from ketch._gateway.longrequests import result_id
from ketch._gateway.proxy import Denied, Gateway, Limits, Ready, RequestHead
from ketch._gateway.ratelimit import TokenBucket
from ketch._gateway.routes import Endpoint, RouteTable, build_table
from ketch._server.scheduler import Scheduler
from ketch._server.store import Store
from ketch.exception import Error, InvalidError, NotFoundError, ResourceExhaustedError

log = logging.getLogger("ketch.gateway")


@dataclass
class _Target:
    address: str
    remove_headers: frozenset[bytes]
    on_release: Callable[[str], None]

    def release(self, outcome: str) -> None:
        on_release, self.on_release = self.on_release, _noop
        on_release(outcome)


def _noop(outcome: str) -> None:
    pass


class WebService:
    def __init__(
        self,
        scheduler: Scheduler,
        store: Store,
        *,
        host: str,
        port: int,
        domain: str,
        rate: float,
        burst: float,
        trusted_proxies: frozenset[str],
        limits: Limits,
        tls_cert: str = "",
        tls_key: str = "",
    ) -> None:
        self.scheduler = scheduler
        self.store = store
        self.host = host
        self.port = port
        self.domain = domain
        # Every listener (the host-routed port and the endpoints' own) speaks HTTPS when a
        # certificate is configured; the URLs handed out say so.
        self.tls = tls_context(tls_cert, tls_key) if tls_cert else None
        self.scheme = "https" if self.tls is not None else "http"
        self.table = RouteTable()
        self.bucket = TokenBucket(rate, burst)
        self.tokens: dict[str, str] = store.live_tokens()
        self.gateway = Gateway(self.resolve, limits, trusted_proxies)
        self.gateway.owner_of = self._owner_of
        scheduler.on_container_gone = self.gateway.forget
        self._listeners: dict[int, Any] = {}
        self.gone: dict[str, Endpoint] = {}  # host label -> endpoint of a stopped app
        self._gone_ports: dict[int, Endpoint] = {}

    # -- listeners ----------------------------------------------------------------------
    async def start(self) -> int:
        """Bind the main gateway port (host routing); returns the port in use."""
        wanted = self.port
        remembered = self.store.get_meta("gateway_port")
        try:
            sock = _bind(self.host, wanted)
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE or wanted == 0:
                raise
            fallback = int(remembered) if remembered and int(remembered) != wanted else 0
            log.warning("gateway port %s is taken; using %s", wanted, fallback or "a free port")
            try:
                sock = _bind(self.host, fallback)
            except OSError:
                sock = _bind(self.host, 0)
        self.port = sock.getsockname()[1]
        self.store.set_meta("gateway_port", str(self.port))
        self._listeners[self.port] = await self.gateway.serve(sock, self.tls)
        return self.port

    def port_for(self, host_label: str, *, reserve: bool = True) -> int:
        """The endpoint's own port: the same one every time (persisted), free when new.
        With reserve=False a new label gets 0 and nothing is written (conflict checks)."""
        known = self.store.web_port(host_label)
        if known is not None:
            return known
        if not reserve:
            return 0
        used = self.store.used_web_ports() | {self.port}
        while True:
            probe = _bind(self.host, 0)
            port = int(probe.getsockname()[1])
            probe.close()
            if port not in used:
                break
        self.store.set_web_port(host_label, port)
        return port

    async def update(self, endpoints: list[Endpoint]) -> None:
        """Swap in a new route table and open/close endpoint ports to match it."""
        table = build_table(endpoints)
        wanted = set(table.by_port)
        for port in wanted - set(self._listeners):
            try:
                sock = _bind(self.host, port)
            except OSError as exc:
                log.error("cannot listen on endpoint port %s: %s", port, exc)
                continue
            self._listeners[port] = await self.gateway.serve(sock, self.tls)
        # Endpoints that went away keep their port and host: the printed URL of a stopped
        # app answers 503 from ketch rather than refusing connections (W17).
        for ep in self.table.by_host.values():
            if ep.host not in table.by_host:
                self.gone[ep.host] = ep
        for ep in table.by_host.values():
            self.gone.pop(ep.host, None)
        self._gone_ports = {ep.port: ep for ep in self.gone.values()}
        self.table = table

    def check_conflicts(self, endpoints: list[Endpoint], replacing: set[str]) -> None:
        """Raise AlreadyExistsError if `endpoints` would take a label or domain of an app
        other than those in `replacing`."""
        others = [ep for ep in self.table.by_host.values() if ep.app_id not in replacing]
        build_table(others + endpoints)

    def url(self, ep: Endpoint) -> str:
        return f"{self.scheme}://{_url_host(self.host)}:{ep.port}"

    def gateway_url(self) -> str:
        return f"{self.scheme}://{_url_host(self.host)}:{self.port}"

    def host_url(self, ep: Endpoint) -> str:
        return f"{self.scheme}://{ep.host}.{self.domain}:{self.port}"

    def reload_tokens(self) -> None:
        self.tokens = self.store.live_tokens()

    async def close(self) -> None:
        for server in self._listeners.values():
            server.close()
        self._listeners.clear()
        await self.gateway.close()

    def _owner_of(self, head: RequestHead) -> str:
        """The endpoint a detached long request is for (its host label): its result URL
        answers at any of that endpoint's addresses, and at no other endpoint's."""
        ep = self.table.lookup(head.host, head.local_port, self.domain)
        return ep.host if ep is not None else f"-{head.host}|{head.local_port}"

    # -- the resolver -------------------------------------------------------------------
    async def resolve(self, head: RequestHead) -> _Target | Denied | Ready:
        ep = self.table.lookup(head.host, head.local_port, self.domain)
        if ep is None:
            old = self._gone_ports.get(head.local_port)
            if old is None and head.host and head.host.endswith("." + self.domain):
                old = self.gone.get(head.host[: -len(self.domain) - 1])
            if old is not None:
                return Denied(503, f"app {old.app_name!r} is stopped")
            return Denied(404, f"no web endpoint is served at {head.host or 'this address'}")
        remove = CREDENTIAL_HEADERS
        if ep.requires_proxy_auth:
            creds = credentials(head.headers)
            if creds is None or not check(self.tokens, creds[0], creds[1]):
                return Denied(
                    401,
                    "this endpoint requires a valid proxy auth token "
                    "(Ketch-Key and Ketch-Secret headers)",
                    [("www-authenticate", 'Bearer realm="ketch"')],
                )
            if creds[2]:
                remove = remove | {b"authorization"}
        wait = self.bucket.take()
        if wait > 0:
            return Denied(
                429,
                "rate limit exceeded for this workspace; retry later",
                [("retry-after", str(max(1, math.ceil(wait))))],
            )
        call_id = result_id(head.target)
        if call_id is not None:
            # A long request's result URL (W14): read the kept response; never run anything.
            return await self.gateway.results.answer(call_id, head, ep.host)
        params = None
        cls_params = ep.web.get("cls_params")
        if cls_params:
            try:
                params = _params_from_query(head.target, cls_params)  # type: ignore[arg-type]
            except ValueError as exc:
                return Denied(400, str(exc))
        try:
            inp, addr = await self.scheduler.acquire_web(ep.function_id, params)
        except NotFoundError:
            return Denied(503, f"app {ep.app_name!r} is stopped")
        except ResourceExhaustedError as exc:
            return Denied(429, str(exc), [("retry-after", "1")])
        except Error as exc:
            return Denied(502, f"{ep.tag} failed to start: {str(exc).splitlines()[0]}")
        except Exception as exc:
            return Denied(502, f"{ep.tag} failed to start: {exc!r}")
        return _Target(
            addr, remove, lambda outcome: self.scheduler.web_done(inp, outcome, head.status)
        )


def tls_context(cert: str, key: str) -> ssl.SSLContext:
    """The gateway's server-side TLS settings: the configured certificate chain and key,
    HTTP/1.1 by ALPN (the only protocol the gateway speaks), the library's safe defaults."""
    for setting, path in (("tls_cert (KETCH_TLS_CERT)", cert), ("tls_key (KETCH_TLS_KEY)", key)):
        if not Path(path).is_file():
            raise InvalidError(f"TLS: {setting} {path!r}: no such file")
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.set_alpn_protocols(["http/1.1"])
    try:
        ctx.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise InvalidError(
            f"TLS: cannot use the certificate {cert!r} with the key {key!r}: "
            f"{exc} (settings tls_cert, tls_key)"
        ) from None
    return ctx


def _params_from_query(target: str, types: dict[str, str]) -> bytes | None:
    """Class parameters given in the URL's query string, encoded as the SDK encodes them,
    so that `?x=1` and `Model(x=1)` share a pool (S6)."""
    from urllib.parse import parse_qsl, urlsplit

    from ketch._utils.payload import encode_params

    given = dict(parse_qsl(urlsplit(target).query, keep_blank_values=True))
    params: dict[str, object] = {}
    for name, kind in types.items():
        if name not in given:
            continue
        raw = given[name]
        if kind == "int":
            try:
                params[name] = int(raw)
            except ValueError:
                raise ValueError(f"parameter {name} must be an integer, got {raw!r}") from None
        elif kind == "bool":
            if raw.lower() not in ("1", "0", "true", "false", "yes", "no"):
                raise ValueError(f"parameter {name} must be true or false, got {raw!r}")
            params[name] = raw.lower() in ("1", "true", "yes")
        elif kind == "bytes":
            params[name] = raw.encode()
        else:
            params[name] = raw
    return encode_params(params)


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(2048)
    except OSError:
        with contextlib.suppress(OSError):
            sock.close()
        raise
    sock.setblocking(False)
    return sock


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host
