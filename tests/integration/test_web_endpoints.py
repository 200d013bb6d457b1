"""FastAPI endpoints through the real gateway, driven by real HTTP clients: requests and
responses (W1), calling rules (B9), labels and URLs (W5, W9), proxy auth (W15), the
caller's address (W16), big uploads (W12), cold starts (S2) and hostile input (W17).

One ephemeral run of `supports/web_endpoints.py` serves the whole module.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

import ketch
from ketch.exception import InvalidError
from supports import web_endpoints as w
from supports.web_helpers import (
    cold_starts,
    containers,
    endpoints_of,
    gateway_port,
    memory_kib,
    raw_request,
    server_pid,
    status_line,
)

ORIGIN = "http://app.example.test"


@pytest.fixture(scope="module")
def app_id(ketch_server: Any) -> Iterator[str]:
    with w.app.run(show_logs=False):
        assert w.app.app_id is not None
        yield w.app.app_id


@pytest.fixture(scope="module")
def http(app_id: str) -> Iterator[httpx.Client]:
    with httpx.Client(timeout=60) as client:
        yield client


def url(fn: ketch.Function) -> str:
    got = fn.get_web_url()
    assert got is not None and got.startswith("http://127.0.0.1:"), got
    return got


# -- W1: one FastAPI route per endpoint -----------------------------------------------------


@pytest.mark.spec("W1")
def test_typed_query_parameter_returns_json(http: httpx.Client) -> None:
    r = http.get(url(w.square), params={"x": 42})
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/json"
    assert r.json() == {"square": 1764}


@pytest.mark.spec("W1")
def test_async_handler(http: httpx.Client) -> None:
    r = http.get(url(w.async_square), params={"x": 5})
    assert r.status_code == 200 and r.json() == {"square": 25, "async": True}


@pytest.mark.spec("W1")
def test_invalid_query_parameters_get_422_with_fastapis_detail(http: httpx.Client) -> None:
    missing = http.get(url(w.square))
    assert missing.status_code == 422
    detail = missing.json()["detail"]
    assert detail[0]["loc"] == ["query", "x"] and detail[0]["type"] == "missing"
    wrong = http.get(url(w.square), params={"x": "seven"})
    assert wrong.status_code == 422
    assert wrong.json()["detail"][0]["loc"] == ["query", "x"]


@pytest.mark.spec("W1")
def test_other_methods_get_405(http: httpx.Client) -> None:
    r = http.post(url(w.square), params={"x": 1})
    assert r.status_code == 405
    assert r.headers["allow"] == "GET"
    assert http.get(url(w.post_dict)).status_code == 405
    assert http.get(url(w.whoami)).status_code == 405  # a PUT endpoint


@pytest.mark.spec("W1")
def test_dict_and_pydantic_bodies(http: httpx.Client) -> None:
    r = http.post(url(w.post_dict), json={"x": 42})
    assert r.status_code == 200 and r.json() == {"square": 1764}
    r = http.post(url(w.post_model), json={"name": "Erik"})
    assert r.status_code == 200 and r.json() == {"processed": "Erik", "quantity": 42}
    r = http.post(url(w.post_model), json={"name": "Erik", "qty": "many"})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "qty"]
    r = http.post(
        url(w.post_dict), content=b"not json", headers={"content-type": "application/json"}
    )
    assert r.status_code == 422


@pytest.mark.spec("W1")
def test_response_objects_pass_through(http: httpx.Client) -> None:
    r = http.get(url(w.teapot))
    assert r.status_code == 418
    assert r.text == "short and stout"
    assert r.headers["x-ketch-test"] == "passed through"
    assert r.headers["content-type"].startswith("text/plain")


@pytest.mark.spec("W1")
def test_request_is_injectable(http: httpx.Client) -> None:
    r = http.put(url(w.whoami) + "/?q=1", headers={"x-custom-thing": "yes"})
    assert r.status_code == 200
    seen = r.json()
    assert seen["method"] == "PUT"
    assert seen["headers"]["x-custom-thing"] == "yes"


@pytest.mark.spec("W1")
def test_cors_is_permissive(http: httpx.Client) -> None:
    preflight = http.options(
        url(w.post_dict),
        headers={
            "origin": ORIGIN,
            "access-control-request-method": "POST",
            "access-control-request-headers": "content-type,x-anything",
        },
    )
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == "*"
    assert "POST" in preflight.headers["access-control-allow-methods"]
    assert "x-anything" in preflight.headers["access-control-allow-headers"].lower()
    simple = http.post(url(w.post_dict), json={"x": 2}, headers={"origin": ORIGIN})
    assert simple.status_code == 200
    assert simple.headers["access-control-allow-origin"] == "*"


@pytest.mark.spec("W1")
def test_docs_only_when_asked_for(http: httpx.Client) -> None:
    docs = http.get(url(w.documented) + "/docs")
    assert docs.status_code == 200 and "<html" in docs.text.lower()
    spec = http.get(url(w.documented) + "/openapi.json")
    assert spec.status_code == 200 and "/" in spec.json()["paths"]
    assert http.get(url(w.documented), params={"name": "docs"}).json() == "hello docs"
    for path in ("/docs", "/openapi.json", "/redoc"):
        assert http.get(url(w.square) + path).status_code == 404


# -- B9: web functions are called over HTTP -------------------------------------------------


@pytest.mark.spec("B9")
def test_remote_map_spawn_refused_naming_the_url(app_id: str) -> None:
    where = url(w.square)
    with pytest.raises(InvalidError, match=f"square.*{where}"):
        w.square.remote(x=1)
    with pytest.raises(InvalidError, match=where):
        list(w.square.map([1, 2]))
    with pytest.raises(InvalidError, match=where):
        w.square.spawn(x=1)
    assert w.square.local(x=6) == {"square": 36}
    assert w.post_model.local(w.Item(name="local")) == {"processed": "local", "quantity": 42}


# -- W5 / W9: labels, hosts and URLs ---------------------------------------------------------


def _ephemeral_host(label: str) -> str:
    workspace = os.environ.get("KETCH_WORKSPACE", "local")
    full = f"{workspace}--{label}"
    if len(full) + len("-dev") <= 63:
        return full + "-dev"
    # The documented rule: keep the start, then "-", six hex digits of the SHA-256 of the
    # untruncated label, and the -dev suffix, in 63 characters in all.
    digest = hashlib.sha256(full.encode()).hexdigest()[:6]
    return f"{full[: 63 - 7 - 4]}-{digest}-dev"


@pytest.mark.spec("W5")
def test_default_custom_and_overlong_labels(
    app_id: str, http: httpx.Client, ketch_server: Any
) -> None:
    eps = endpoints_of(app_id)
    assert eps["post_dict"]["host"] == _ephemeral_host("ketch-web-ep-post-dict")
    assert eps["labelled"]["host"] == _ephemeral_host(w.CUSTOM_LABEL)
    long_tag = "an_unusually_long_function_name_that_overflows_the_host_label"
    host = eps[long_tag]["host"]
    assert len(host) == 63 and host == _ephemeral_host(
        "ketch-web-ep-an-unusually-long-function-name-that-overflows-the-host-label"
    )
    # Each of them is served, on its own port and by its host name.
    port = gateway_port(ketch_server.home)
    for tag, text in (("labelled", "labelled"), (long_tag, "long")):
        assert http.get(eps[tag]["url"]).json() == text
        r = http.get(f"http://127.0.0.1:{port}/", headers={"host": f"{eps[tag]['host']}.localhost"})
        assert r.status_code == 200 and r.json() == text


@pytest.mark.spec("W5")
@pytest.mark.parametrize("bad", ["Upper", "under_score", "-lead", "trail-", "1234", "x" * 64])
def test_invalid_labels_fail_at_decoration(bad: str) -> None:
    for deco in (ketch.fastapi_endpoint, ketch.asgi_app, ketch.wsgi_app):
        with pytest.raises(InvalidError, match="label"):
            deco(label=bad)


@pytest.mark.spec("W9")
def test_get_web_url_inside_the_container(http: httpx.Client) -> None:
    assert http.get(url(w.show_url)).json() == url(w.show_url)


@pytest.mark.spec("W9")
def test_url_works_from_every_client(http: httpx.Client) -> None:
    target = url(w.square) + "?x=9"
    want = {"square": 81}
    curl = subprocess.run(
        ["curl", "-sS", "--max-time", "30", target], capture_output=True, text=True, timeout=60
    )
    assert curl.returncode == 0, curl.stderr
    assert json.loads(curl.stdout) == want
    with urllib.request.urlopen(target, timeout=30) as resp:
        assert json.loads(resp.read()) == want
    assert httpx.get(target, timeout=30).json() == want
    import requests

    assert requests.get(target, timeout=30).json() == want


@pytest.mark.spec("W9")
def test_host_routed_url(app_id: str, http: httpx.Client, ketch_server: Any) -> None:
    ep = endpoints_of(app_id)["square"]
    port = gateway_port(ketch_server.home)
    assert ep["host_url"] == f"http://{ep['host']}.localhost:{port}"
    r = http.get(
        f"http://127.0.0.1:{port}/",
        params={"x": 3},
        headers={"host": f"{ep['host']}.localhost:{port}"},
    )
    assert r.status_code == 200 and r.json() == {"square": 9}
    # curl resolves *.localhost to the loopback by itself: the host URL works unchanged.
    curl = subprocess.run(
        ["curl", "-sS", "--max-time", "30", ep["host_url"] + "/?x=4"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert curl.returncode == 0, curl.stderr
    assert json.loads(curl.stdout) == {"square": 16}


# -- W15: proxy auth -------------------------------------------------------------------------


CREDENTIAL_HEADERS = {"ketch-key", "ketch-secret", "modal-key", "modal-secret", "authorization"}


@pytest.mark.spec("W15", "C4")
def test_proxy_auth(app_id: str, http: httpx.Client, ketch_server: Any) -> None:
    target = url(w.protected)
    starts = cold_starts()
    denied = http.get(target)
    assert denied.status_code == 401
    assert denied.text.startswith("ketch:")
    assert containers(app_id, "protected") == [] and cold_starts() == starts

    made = ketch_server.ketch("token", "create", "--json", check=True)
    token = json.loads(made.stdout)
    key, secret = token["token_id"], token["secret"]
    assert key.startswith("wk-") and secret.startswith("ws-")
    assert (
        http.get(target, headers={"ketch-key": key, "ketch-secret": "ws-wrong"}).status_code == 401
    )
    assert http.get(target, headers={"ketch-key": key}).status_code == 401

    for headers in (
        {"Ketch-Key": key, "Ketch-Secret": secret},
        {"Modal-Key": key, "Modal-Secret": secret},
        {"Authorization": f"Bearer {key}.{secret}"},
    ):
        r = http.get(target, headers=headers)
        assert r.status_code == 200, (headers, r.text)
        seen = set(r.json()["headers"])
        assert not seen & CREDENTIAL_HEADERS, seen

    listed = json.loads(ketch_server.ketch("token", "list", "--json", check=True).stdout)
    mine = [t for t in listed if t["token_id"] == key]
    assert len(mine) == 1 and secret not in json.dumps(listed)  # the secret is never listed
    ketch_server.ketch("token", "revoke", key, check=True)
    r = http.get(target, headers={"Ketch-Key": key, "Ketch-Secret": secret})
    assert r.status_code == 401 and r.text.startswith("ketch:")


# -- W16: the caller's address --------------------------------------------------------------


@pytest.mark.spec("W16")
def test_handler_sees_the_callers_address(http: httpx.Client) -> None:
    seen = http.put(url(w.whoami)).json()
    assert seen["client"] == "127.0.0.1"
    assert seen["headers"]["x-forwarded-for"] == "127.0.0.1"
    # A caller that is not a configured proxy cannot make up where it comes from.
    spoofed = http.put(url(w.whoami), headers={"x-forwarded-for": "203.0.113.9"}).json()
    assert spoofed["client"] == "127.0.0.1"
    assert "203.0.113.9" not in spoofed["headers"]["x-forwarded-for"]
    assert spoofed["headers"]["x-forwarded-for"].endswith("127.0.0.1")
    assert "x-ketch-client" not in spoofed["headers"]


# -- S2: cold starts -------------------------------------------------------------------------


@pytest.mark.spec("S2")
def test_first_request_waits_for_the_cold_start(app_id: str, http: httpx.Client) -> None:
    assert containers(app_id, "cold") == []
    starts = cold_starts()
    r = http.get(url(w.cold))
    assert r.status_code == 200 and r.json()["pid"] > 0
    assert cold_starts() == starts + 1
    assert http.get(url(w.cold)).json() == r.json()  # the same, warm container


# -- W12: request bodies ---------------------------------------------------------------------


GIB = 1024**3


@pytest.mark.spec("W12")
def test_1gib_upload_streams_with_flat_server_memory(http: httpx.Client, ketch_server: Any) -> None:
    target = url(w.upload)
    assert http.post(target, content=b"warm").json()["size"] == 4  # container started
    pid = server_pid(ketch_server.home)
    # Reset the peak-RSS mark so that VmHWM covers this upload only (where allowed).
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as fh:
            fh.write("5")
        peak_reset = True
    except OSError:
        peak_reset = False
    base = memory_kib(pid, "VmRSS")
    peak = [base]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.02):
            peak[0] = max(peak[0], memory_kib(pid, "VmRSS"))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    block = os.urandom(1 << 20)
    digest = hashlib.sha256()

    def body() -> Iterator[bytes]:
        for _ in range(GIB // len(block)):
            digest.update(block)
            yield block

    try:
        r = httpx.post(target, content=body(), timeout=120)
    finally:
        done.set()
        sampler.join()
    assert r.status_code == 200, r.text
    assert r.json() == {"size": GIB, "sha256": digest.hexdigest()}
    bound = 128 * 1024  # KiB
    assert peak[0] - base < bound, f"server RSS grew {(peak[0] - base) // 1024} MiB"
    if peak_reset:  # also catches a spike shorter than the sampling interval
        hwm = memory_kib(pid, "VmHWM")
        assert hwm - base < bound, f"server peak RSS grew {(hwm - base) // 1024} MiB"


@pytest.mark.spec("W12")
@pytest.mark.spec("W17")
def test_declared_body_over_4gib_gets_413_unread(app_id: str) -> None:
    port = int(url(w.upload).rsplit(":", 1)[1])
    head = (
        f"POST / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: text/plain\r\n"
        f"Content-Length: {5 * GIB}\r\n\r\n"
    ).encode()
    reply = raw_request(port, head + b"x" * 1024)
    assert status_line(reply) == 413
    assert b"\r\n\r\nketch:" in reply


# -- W17: the gateway holds up ---------------------------------------------------------------


@pytest.mark.spec("W17")
def test_unknown_host_gets_404_from_ketch(http: httpx.Client, ketch_server: Any) -> None:
    port = gateway_port(ketch_server.home)
    r = http.get(f"http://127.0.0.1:{port}/", headers={"host": "no-such-endpoint.localhost"})
    assert r.status_code == 404
    assert r.text.startswith("ketch:")


@pytest.mark.spec("W17")
def test_hostile_input_while_a_normal_request_succeeds(http: httpx.Client) -> None:
    port = int(url(w.square).rsplit(":", 1)[1])
    assert http.get(url(w.square), params={"x": 1}).status_code == 200  # warm

    # A slow client trickling its head one byte a second holds nothing up.
    stop = threading.Event()

    def trickle() -> None:
        import socket

        with socket.create_connection(("127.0.0.1", port)) as sock:
            for byte in b"GET /?x=2 HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"y" * 100:
                if stop.wait(1.0):
                    return
                try:
                    sock.sendall(bytes([byte]))
                except OSError:
                    return  # dropped by the gateway: allowed

    slow = threading.Thread(target=trickle, daemon=True)
    slow.start()
    try:
        time.sleep(1.5)
        malformed = raw_request(port, b"THIS IS NOT HTTP\r\n\r\n")
        assert malformed == b"" or status_line(malformed) == 400  # answered, or dropped
        assert malformed == b"" or b"\r\n\r\nketch:" in malformed
        huge = raw_request(
            port, b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (200 * 1024) + b"\r\n\r\n"
        )
        assert huge == b"" or status_line(huge) in (400, 431)
        started = time.monotonic()
        r = http.get(url(w.square), params={"x": 12})
        assert r.status_code == 200 and r.json() == {"square": 144}
        assert time.monotonic() - started < 5
    finally:
        stop.set()
        slow.join(5)
