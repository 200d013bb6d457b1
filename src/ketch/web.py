"""Web decorators: `fastapi_endpoint`, `asgi_app`, `wsgi_app` and `web_server`."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from ketch._partial import PartialFunction, wrap
from ketch._utils.labels import is_domain, validate_label
from ketch.exception import InvalidError, deprecation_warning

_METHODS = {"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"}


def _common(label: str | None, custom_domains: Any, requires_proxy_auth: bool) -> dict[str, Any]:
    if label is not None:
        validate_label(label)
    domains: list[str] = []
    for d in custom_domains or ():
        if not isinstance(d, str) or not is_domain(d.lower()):
            raise InvalidError(f"custom domain {d!r} is not a valid domain name (or *.domain)")
        domains.append(d.lower())
    if not isinstance(requires_proxy_auth, bool):
        raise InvalidError("requires_proxy_auth takes True or False")
    return {"label": label, "custom_domains": domains, "requires_proxy_auth": requires_proxy_auth}


def _no_parens(value: Any, name: str) -> None:
    if value is not None:
        raise InvalidError(f"did you forget parentheses? write @{name}() rather than @{name}")


def fastapi_endpoint(
    _warn_parentheses_missing: Any = None,
    *,
    method: str = "GET",
    label: str | None = None,
    docs: bool = False,
    custom_domains: list[str] | None = None,
    requires_proxy_auth: bool = False,
) -> Callable[[Any], PartialFunction[..., Any]]:
    """Serve the function as a one-route FastAPI app at `/` for `method`."""
    _no_parens(_warn_parentheses_missing, "fastapi_endpoint")
    if not isinstance(method, str) or method.upper() not in _METHODS:
        raise InvalidError(f"method={method!r}: choose one of {', '.join(sorted(_METHODS))}")
    web = {
        "type": "fastapi",
        "method": method.upper(),
        "docs": bool(docs),
        **_common(label, custom_domains, requires_proxy_auth),
    }

    def deco(f: Any) -> PartialFunction[..., Any]:
        raw = f.raw_f if isinstance(f, PartialFunction) else f
        if inspect.isgeneratorfunction(raw) or inspect.isasyncgenfunction(raw):
            raise InvalidError(
                "a web endpoint cannot be a generator; return a StreamingResponse instead"
            )
        return wrap(f, "fastapi_endpoint", web=web)

    return deco


def web_endpoint(
    _warn_parentheses_missing: Any = None, **kwargs: Any
) -> Callable[[Any], PartialFunction[..., Any]]:
    """Old name of `fastapi_endpoint`."""
    deprecation_warning((2025, 3, 5), "web_endpoint is deprecated; use fastapi_endpoint")
    return fastapi_endpoint(_warn_parentheses_missing, **kwargs)


def _app_factory(
    kind: str, name: str, extra: dict[str, Any]
) -> Callable[[Any], PartialFunction[..., Any]]:
    def deco(f: Any) -> PartialFunction[..., Any]:
        raw = f.raw_f if isinstance(f, PartialFunction) else f
        if inspect.iscoroutinefunction(raw):
            raise InvalidError(f"@{name} takes a plain (non-async) function that returns the app")
        params = [
            p
            for p in inspect.signature(raw).parameters.values()
            if p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
        ]
        if params and params[0].name == "self":
            params = params[1:]  # a method of an @app.cls class: self is the instance
        if params:
            raise InvalidError(f"@{name} functions take no arguments (got {params[0].name!r})")
        return wrap(f, name, web={"type": kind, **extra})

    return deco


def asgi_app(
    _warn_parentheses_missing: Any = None,
    *,
    label: str | None = None,
    custom_domains: list[str] | None = None,
    requires_proxy_auth: bool = False,
) -> Callable[[Any], PartialFunction[..., Any]]:
    """Serve the ASGI app that the decorated function returns."""
    _no_parens(_warn_parentheses_missing, "asgi_app")
    return _app_factory("asgi", "asgi_app", _common(label, custom_domains, requires_proxy_auth))


def wsgi_app(
    _warn_parentheses_missing: Any = None,
    *,
    label: str | None = None,
    custom_domains: list[str] | None = None,
    requires_proxy_auth: bool = False,
) -> Callable[[Any], PartialFunction[..., Any]]:
    """Serve the WSGI app (Flask, Django) that the decorated function returns, on threads."""
    _no_parens(_warn_parentheses_missing, "wsgi_app")
    return _app_factory("wsgi", "wsgi_app", _common(label, custom_domains, requires_proxy_auth))


def web_server(
    port: int,
    *,
    startup_timeout: float = 5.0,
    label: str | None = None,
    custom_domains: list[str] | None = None,
    requires_proxy_auth: bool = False,
) -> Callable[[Any], PartialFunction[..., Any]]:
    """Serve whatever HTTP server the decorated function starts on `port`."""
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise InvalidError(f"web_server(port) takes a port number 1-65535, got {port!r}")
    if not isinstance(startup_timeout, int | float) or startup_timeout <= 0:
        raise InvalidError("web_server startup_timeout must be a positive number of seconds")
    extra = {
        "port": port,
        "startup_timeout": float(startup_timeout),
        **_common(label, custom_domains, requires_proxy_auth),
    }
    return _app_factory("web_server", "web_server", extra)
