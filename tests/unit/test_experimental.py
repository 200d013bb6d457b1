"""`ketch.experimental.http_server` (Modal's HTTP servers) as a class decorator: the class
gets one `web_server` endpoint and `Cls._experimental_get_flash_urls()` names its URL."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest

import ketch
from ketch import experimental
from ketch.exception import InvalidError

REGIONS = ["us-east"]


def _server_class(app: ketch.App, **kwargs: Any) -> Any:
    @app.cls(serialized=True)
    @experimental.http_server(port=8000, proxy_regions=REGIONS, **kwargs)
    class Server:
        @ketch.enter()
        def start(self) -> None:
            pass

    return Server


@pytest.mark.spec("W4", "C7")
def test_the_class_gets_one_web_server_endpoint_on_the_port() -> None:
    app = ketch.App("hs")
    _server_class(app, startup_timeout=45)
    endpoint = app._web_methods["Server.http_server"]
    assert endpoint._web is not None
    assert endpoint._web["type"] == "web_server"
    assert endpoint._web["port"] == 8000
    assert endpoint._web["startup_timeout"] == 45.0


@pytest.mark.spec("W4")
def test_it_stacks_on_concurrent_and_keeps_its_flags() -> None:
    app = ketch.App("hs")

    @app.cls(serialized=True)
    @experimental.http_server(port=8000, proxy_regions=REGIONS)
    @ketch.concurrent(max_inputs=10)
    class Server:
        pass

    assert "Server.http_server" in app._web_methods
    assert app.registered_classes["Server"]._options.max_inputs == 10


@pytest.mark.spec("A3")
@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"port": None, "proxy_regions": REGIONS}, "takes the port"),
        ({"port": 0, "proxy_regions": REGIONS}, "port must be"),
        ({"port": True, "proxy_regions": REGIONS}, "port must be"),
        ({"port": 8000}, "proxy_regions must be a non-empty list"),
        ({"port": 8000, "proxy_regions": [""]}, "proxy_regions"),
        ({"port": 8000, "proxy_regions": REGIONS, "startup_timeout": 0}, "startup_timeout"),
        ({"port": 8000, "proxy_regions": REGIONS, "exit_grace_period": 26}, "0-25"),
        ({"port": 8000, "proxy_regions": REGIONS, "exit_grace_period": -1}, "0-25"),
        ({"port": 8000, "proxy_regions": REGIONS, "h2_enabled": "yes"}, "h2_enabled"),
    ],
)
def test_bad_arguments_are_refused(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(InvalidError, match=match):
        experimental.http_server(**kwargs)


@pytest.mark.spec("A3")
def test_it_decorates_classes_only() -> None:
    deco = experimental.http_server(port=8000, proxy_regions=REGIONS)
    with pytest.raises(InvalidError, match="decorates a class"):
        deco(lambda: None)

    class Taken:
        def http_server(self) -> None:
            pass

    with pytest.raises(InvalidError, match="already has an attribute"):
        deco(Taken)


@pytest.mark.spec("C7")
def test_flash_urls_of_an_app_class() -> None:
    app = ketch.App("hs")
    server = _server_class(app)
    with pytest.raises(InvalidError, match="is not running"):
        server._experimental_get_flash_urls()
    # What a deploy or a running `app.run()` leaves on the handles.
    app._set_deployed(
        {"app_id": "ap-1", "functions": {}, "web_urls": {"Server.http_server": "http://u"}}
    )
    assert server._experimental_get_flash_urls() == ["http://u"]
    app._app_id = None  # what the end of `with app.run():` leaves
    with pytest.raises(InvalidError, match="is not running"):
        server._experimental_get_flash_urls()

    @app.cls(serialized=True)
    class Plain:
        @ketch.method()
        def f(self) -> None:
            pass

    plain: Any = Plain  # its handle (mypy keeps an @app.cls class's own type)
    with pytest.raises(InvalidError, match="has no HTTP server"):
        plain._experimental_get_flash_urls()


@pytest.mark.spec("C7", "A11")
def test_flash_urls_of_a_looked_up_class() -> None:
    cls = ketch.Cls.from_name("hs", "Server")
    # As the server's lookup reply describes the class (no server needed here).
    cls._function._function_id = "fu-1"
    cls._function._info = {"methods": {}, "web_methods": {"http_server": "http://v"}}
    assert cls._experimental_get_flash_urls() == ["http://v"]
    cls._function._info = {"methods": {}, "web_methods": {}}
    with pytest.raises(InvalidError, match="has no HTTP server"):
        cls._experimental_get_flash_urls()


@pytest.mark.spec("C7")
def test_modal_experimental_and_modal_gpu_resolve_to_ketch() -> None:
    code = (
        "from ketch.compat.shim import install_modal_alias; install_modal_alias(); "
        "import ketch, ketch.experimental, ketch.gpu, modal, modal.experimental; "
        "assert modal.experimental is ketch.experimental; "
        "assert modal.experimental.http_server is ketch.experimental.http_server; "
        "assert modal.gpu is ketch.gpu; from modal import gpu; assert gpu is ketch.gpu"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
