"""`ketch.experimental` (Modal's `modal.experimental`): HTTP servers started by a class's
`@enter`, served as a web endpoint of the class."""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING, Any

from ketch._partial import PartialFunction
from ketch.exception import InvalidError
from ketch.web import web_server

if TYPE_CHECKING:
    from ketch.cls import Cls

# The web method `http_server` adds to the class; its endpoint is the class's one URL.
SERVER_METHOD = "http_server"
MAX_EXIT_GRACE_PERIOD = 25  # Modal's limit for these servers


def http_server(
    port: int | None = None,
    *,
    proxy_regions: list[str] | tuple[str, ...] = (),
    startup_timeout: int = 30,
    exit_grace_period: int | None = None,
    h2_enabled: bool = False,
) -> Any:
    """Serve the HTTP server that the class's `@enter` methods start on `port`.

    Put it under `@app.cls()`. The class gets one web endpoint, its URL given by
    `Cls._experimental_get_flash_urls()`; traffic flows once `port` accepts connections
    (within `startup_timeout` seconds of the container starting).

    On ketch, `proxy_regions` must be given as on Modal but means nothing (there are no
    regions); `exit_grace_period` is checked and ignored (a container is stopped only once
    its in-flight requests are done); `h2_enabled` is ignored (the gateway talks HTTP/1.1
    to the server)."""
    if port is None:
        raise InvalidError(
            "http_server takes the port its server listens on: "
            "write @ketch.experimental.http_server(port=8000, proxy_regions=[...])"
        )
    _check(port, proxy_regions, startup_timeout, exit_grace_period, h2_enabled)
    serve = web_server(port, startup_timeout=startup_timeout)

    def deco(target: Any) -> Any:
        flags: dict[str, Any] = {}
        user_cls = target
        if isinstance(target, PartialFunction):
            flags, user_cls = target.flags, target.raw_f
        if not inspect.isclass(user_cls):
            raise InvalidError(
                f"@experimental.http_server decorates a class (under @app.cls()), not "
                f"{user_cls!r}; for a function, use @ketch.web_server(port)"
            )
        if SERVER_METHOD in vars(user_cls):
            raise InvalidError(
                f"{user_cls.__name__} already has an attribute {SERVER_METHOD!r}, which "
                "@experimental.http_server needs for its endpoint; rename it"
            )

        def endpoint(self: Any) -> None:
            pass  # the class's @enter methods started the server; nothing is left to do

        endpoint.__name__ = SERVER_METHOD
        endpoint.__qualname__ = f"{user_cls.__qualname__}.{SERVER_METHOD}"
        setattr(user_cls, SERVER_METHOD, serve(endpoint))
        return PartialFunction(user_cls, flags) if flags else user_cls

    return deco


def _check(
    port: object,
    proxy_regions: object,
    startup_timeout: object,
    exit_grace_period: object,
    h2_enabled: object,
) -> None:
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise InvalidError(f"http_server: port must be an integer 1-65535, got {port!r}")
    if (
        not isinstance(proxy_regions, list | tuple)
        or not proxy_regions
        or not all(isinstance(r, str) and r for r in proxy_regions)
    ):
        raise InvalidError(
            "http_server: proxy_regions must be a non-empty list of region names, as Modal "
            f"requires (ketch has no regions and ignores them), got {proxy_regions!r}"
        )
    if (
        isinstance(startup_timeout, bool)
        or not isinstance(startup_timeout, int | float)
        or startup_timeout <= 0
    ):
        raise InvalidError(
            f"http_server: startup_timeout must be a positive number of seconds, got "
            f"{startup_timeout!r}"
        )
    if exit_grace_period is not None and (
        isinstance(exit_grace_period, bool)
        or not isinstance(exit_grace_period, int | float)
        or not 0 <= exit_grace_period <= MAX_EXIT_GRACE_PERIOD
    ):
        raise InvalidError(
            f"http_server: exit_grace_period must be 0-{MAX_EXIT_GRACE_PERIOD} seconds, got "
            f"{exit_grace_period!r}"
        )
    if not isinstance(h2_enabled, bool):
        raise InvalidError(f"http_server: h2_enabled takes True or False, got {h2_enabled!r}")


async def flash_urls(cls: Cls[Any]) -> list[str]:
    """The URL of an `http_server` class's endpoint, as a one-item list (Modal gives one
    per proxy region; ketch has one gateway)."""
    if cls._app is not None:
        endpoint = cls._app._web_methods.get(f"{cls.tag}.{SERVER_METHOD}")
        if endpoint is None:
            raise InvalidError(_not_a_server(cls.tag))
        # A stopped `app.run()` keeps the URLs it was given; its app id is what goes.
        running = cls._app._app_id is not None or cls._app._in_container()
        url = endpoint.get_web_url() if running else None
        if url is None:
            raise InvalidError(
                f"{cls.tag} is not running, so it has no URL yet: call this inside "
                "`with app.run():`, after app.deploy(), or on Cls.from_name(app, name)"
            )
        return [url]
    await cls._hydrate()
    web_methods: dict[str, str | None] = cls._function._info.get("web_methods") or {}
    found = web_methods.get(SERVER_METHOD)
    if found is None:
        raise InvalidError(_not_a_server(cls.tag))
    return [found]


def _not_a_server(tag: str) -> str:
    return (
        f"{tag} has no HTTP server: decorate the class with "
        "@experimental.http_server(port=..., proxy_regions=[...]) under @app.cls()"
    )
