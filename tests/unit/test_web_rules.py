"""Pure rules of the web layer: labels and hosts (W5), routes (W8), rate limit (W13),
proxy-auth credentials (W15), decorator validation (W1-W4)."""

from __future__ import annotations

import hashlib

import pytest

import ketch.web as web
from ketch._gateway.auth import check, credentials, hash_secret, new_token
from ketch._gateway.ratelimit import TokenBucket
from ketch._gateway.routes import Endpoint, build_table
from ketch._utils.labels import default_label, host_label, slugify, validate_label
from ketch.exception import AlreadyExistsError, InvalidError


@pytest.mark.spec("W5")
def test_default_labels_are_slugged() -> None:
    assert default_label("My_App", "Square") == "my-app-square"
    assert default_label("app", "Model", "predict") == "app-model-predict"
    assert slugify("--A b__c--") == "a-b-c"


@pytest.mark.spec("W5")
@pytest.mark.parametrize(
    "bad", ["", "UPPER", "-lead", "trail-", "has_underscore", "123", "x" * 64, "dot.ted"]
)
def test_user_labels_are_validated_not_rewritten(bad: str) -> None:
    with pytest.raises(InvalidError):
        validate_label(bad)
    assert validate_label("api-v2") == "api-v2"
    assert validate_label("a1") == "a1"


@pytest.mark.spec("W5")
def test_host_labels_with_env_suffix_and_dev() -> None:
    assert host_label("local", "main", "hello-square", ephemeral=False) == "local--hello-square"
    assert host_label("local", "staging", "api", ephemeral=True) == "local-staging--api-dev"


@pytest.mark.spec("W5")
def test_overlong_host_label_is_truncated_with_hash() -> None:
    label = "x" * 63
    full = f"local--{label}"
    got = host_label("local", "main", label, ephemeral=False)
    digest = hashlib.sha256(full.encode()).hexdigest()[:6]
    assert got == f"{full[:56]}-{digest}"
    assert len(got) == 63
    dev = host_label("local", "main", label, ephemeral=True)
    assert len(dev) == 63 and dev.endswith(f"-{digest}-dev")


def _ep(host: str, port: int, domains: list[str] | None = None, app: str = "a") -> Endpoint:
    return Endpoint(
        "fu-" + host, "ap-" + app, app, host, host, port, {"custom_domains": domains or []}
    )


@pytest.mark.spec("W8")
def test_routes_by_port_host_domain_and_wildcard() -> None:
    a = _ep("local--a", 9001, ["api.example.com"])
    b = _ep("local--b", 9002, ["*.example.net"])
    table = build_table([a, b])
    assert table.lookup(None, 9001, "localhost") is a
    assert table.lookup("local--b.localhost", 8000, "localhost") is b
    assert table.lookup("api.example.com", 8000, "localhost") is a
    assert table.lookup("x.y.example.net", 8000, "localhost") is b
    assert table.lookup("example.net", 8000, "localhost") is None
    assert table.lookup("nope.localhost", 8000, "localhost") is None


@pytest.mark.spec("W5")
def test_label_and_domain_clashes_are_refused() -> None:
    with pytest.raises(AlreadyExistsError, match="local--a"):
        build_table([_ep("local--a", 1), _ep("local--a", 2, app="other")])
    with pytest.raises(AlreadyExistsError, match=r"api\.example\.com"):
        build_table(
            [_ep("local--a", 1, ["api.example.com"]), _ep("local--b", 2, ["api.example.com"])]
        )


@pytest.mark.spec("W13")
def test_token_bucket_burst_then_rate() -> None:
    now = [0.0]
    bucket = TokenBucket(rate=10, burst=5, clock=lambda: now[0])
    assert [bucket.take() for _ in range(5)] == [0.0] * 5
    wait = bucket.take()
    assert wait == pytest.approx(0.1)
    now[0] += 0.1
    assert bucket.take() == 0.0
    now[0] += 100
    assert sum(1 for _ in range(10) if bucket.take() == 0.0) == 5


@pytest.mark.spec("W15")
def test_credentials_in_each_header_form() -> None:
    key, secret = new_token()
    assert key.startswith("wk-") and secret.startswith("ws-")
    stored = {key: hash_secret(secret)}
    forms = [
        [(b"ketch-key", key.encode()), (b"ketch-secret", secret.encode())],
        [(b"modal-key", key.encode()), (b"modal-secret", secret.encode())],
        [(b"authorization", f"Bearer {key}.{secret}".encode())],
    ]
    for headers in forms:
        creds = credentials(headers)
        assert creds is not None and check(stored, creds[0], creds[1])
    assert credentials([(b"ketch-key", key.encode())]) is None
    assert not check(stored, key, "ws-wrong")
    assert not check({}, key, secret)


@pytest.mark.spec("W1")
def test_web_decorator_validation() -> None:
    with pytest.raises(InvalidError, match="parentheses"):
        web.fastapi_endpoint(lambda: None)
    with pytest.raises(InvalidError, match="method"):
        web.fastapi_endpoint(method="FETCH")
    with pytest.raises(InvalidError, match="label"):
        web.asgi_app(label="Bad_Label")
    with pytest.raises(InvalidError, match="port"):
        web.web_server(0)
    with pytest.raises(InvalidError, match="custom domain"):
        web.fastapi_endpoint(custom_domains=["not a domain"])

    def gen():  # type: ignore[no-untyped-def]
        yield 1

    with pytest.raises(InvalidError, match="generator"):
        web.fastapi_endpoint()(gen)

    def needs_arg(x: int) -> None: ...

    with pytest.raises(InvalidError, match="no arguments"):
        web.asgi_app()(needs_arg)
