"""Web methods of parametrized classes (S6, W5): one pool per parameter set, parameters
from the URL's query string, the `<app>-<cls>-<method>` label."""

from __future__ import annotations

import httpx
import pytest

from ketch.exception import InvalidError
from supports.web_cls import Greeter, app


@pytest.mark.spec("S6", "W5")
def test_class_web_method_takes_parameters_from_the_query(server: object) -> None:
    with app.run(show_logs=False):
        web = Greeter().greet
        url = web.get_web_url()
        assert url is not None
        plain = httpx.get(url, params={"name": "ann"}, timeout=60).json()
        assert plain["msg"] == "hello ann"
        again = httpx.get(url, params={"name": "bob"}, timeout=60).json()
        assert again["pid"] == plain["pid"]  # same parameters, same pool
        custom = httpx.get(
            url, params={"name": "cy", "greeting": "hi", "times": "2"}, timeout=60
        ).json()
        assert custom["msg"] == "hi cy hi cy"
        assert custom["pid"] != plain["pid"]  # another parameter set, another container
        bad = httpx.get(url, params={"name": "x", "times": "many"}, timeout=60)
        assert bad.status_code == 400 and bad.text.startswith("ketch:")
        with pytest.raises(InvalidError, match="web endpoint"):
            web.remote("x")
        # Ordinary methods of the same class still work through .remote().
        assert Greeter(greeting="yo").plain.remote() == "yo"


@pytest.mark.spec("W5")
def test_class_web_method_label(server: object) -> None:
    from ketch._client.deploy import ApiClient
    from ketch._utils.aio import run_sync

    with app.run(show_logs=False):
        endpoints = run_sync(ApiClient().call("GET", "/v1/endpoints"))
    assert any(e["host"] == "local--web-cls-greeter-greet-dev" for e in endpoints), endpoints
