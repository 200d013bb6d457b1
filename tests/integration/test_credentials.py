"""Container credentials (SPEC I4), against a real server and real containers: a container
holds a credential of its own, never the server token; with it the SDK inside reaches its
own environment (functions, Dicts, volumes) and nothing of the management API; a
credential dies with its container, and says hello as its own container only."""

from __future__ import annotations

import json
import socket
import struct
import time
import urllib.request
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from cli_support import unique_name

import ketch
from conftest import ServerHandle
from ketch._server.main import sockets_dir
from ketch._utils.wire import decode, encode_frame
from supports import credentials_app
from supports.credentials_app import app, call_helper, http_status, use_dict, whoami

pytestmark = pytest.mark.spec("I4")

OTHER = "credentials-other"


@pytest.fixture(scope="module")
def helpers(ketch_server: ServerHandle) -> Iterator[None]:
    """The helper app deployed twice: in "main", beside the test app, and in another
    environment."""
    credentials_app.helper.deploy()
    credentials_app.helper.deploy(environment_name=OTHER)
    yield
    for env in ("main", OTHER):
        ketch_server.ketch("app", "stop", "credentials-helper", "--env", env, "-y")


@pytest.fixture
def running(server: ServerHandle, helpers: None) -> Iterator[ServerHandle]:
    with app.run(show_logs=False):
        yield server


def _server_token(handle: ServerHandle) -> str:
    return (handle.home / "token").read_text().strip()


def _hello(handle: ServerHandle, hello: dict[str, Any]) -> dict[str, Any]:
    """The server's answer to a raw hello on the containers' socket."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(30)
    sock.connect(str(sockets_dir(handle.home) / "call.sock"))
    try:
        sock.sendall(encode_frame([{"t": "hello", **hello}]))
        head = sock.recv(8, socket.MSG_WAITALL)
        (length,) = struct.unpack(">Q", head)
        [answer] = decode(sock.recv(length, socket.MSG_WAITALL))
        return answer
    finally:
        sock.close()


def _client_hello(handle: ServerHandle, token: str) -> dict[str, Any]:
    return _hello(handle, {"role": "client", "client_id": f"cl-{uuid.uuid4().hex}", "token": token})


def _containers(handle: ServerHandle) -> dict[str, Any]:
    info = handle.info()
    req = urllib.request.Request(
        f"http://{info['host']}:{info['api_port']}/v1/status",
        headers={"Authorization": f"Bearer {_server_token(handle)}"},
    )
    with urllib.request.urlopen(req, timeout=30) as resp:
        containers: dict[str, Any] = json.load(resp)["containers"]
    return containers


def test_a_container_holds_a_credential_of_its_own(running: ServerHandle) -> None:
    first = whoami.remote()
    assert first["token"] != _server_token(running)
    assert first["token"].startswith("kc-")


def test_the_management_api_refuses_a_container_credential(running: ServerHandle) -> None:
    info = running.info()
    host, port = str(info["host"]), int(info["api_port"])  # type: ignore[call-overload]

    def status(method: str, path: str, body: dict[str, Any] | None = None) -> int:
        return http_status.remote(host, port, method, path, body or {})

    assert status("POST", "/v1/apps/deploy", {"name": "x"}) == 403
    assert status("POST", "/v1/apps/credentials-helper/stop") == 403
    assert status("GET", "/v1/secrets") == 403
    assert status("POST", "/v1/secrets", {"name": "s", "values": {"A": "1"}}) == 403
    assert status("GET", "/v1/status") == 403
    assert status("POST", "/v1/tokens") == 403
    # The helper app was not stopped by the attempt.
    assert call_helper.remote("main", 1) == {"ok": True, "value": 2}
    # Volumes are the one part of the API a container uses, for its own environment only.
    assert status("GET", "/v1/volumes?environment=main") == 200
    assert status("GET", f"/v1/volumes?environment={OTHER}") == 403
    assert status("POST", "/v1/volumes/lookup", {"name": "v", "environment": OTHER}) == 403


def test_a_container_reaches_its_own_environment_only(running: ServerHandle) -> None:
    assert call_helper.remote("main", 21) == {"ok": True, "value": 42}
    refused = call_helper.remote(OTHER, 21)
    assert refused["ok"] is False and refused["type"] == "AuthError"
    assert "lookup" in refused["message"] and repr(OTHER) in refused["message"]

    name = unique_name("cred-dict")
    assert use_dict.remote(name, "main") == {"ok": True, "value": 42}
    assert ketch.Dict.from_name(name)["from-container"] == 42
    elsewhere = unique_name("cred-dict-other")
    ketch.Dict.from_name(elsewhere, environment_name=OTHER, create_if_missing=True).hydrate()
    refused = use_dict.remote(elsewhere, OTHER)
    assert refused["ok"] is False and refused["type"] == "AuthError"
    assert "Dict or Queue" in refused["message"] and repr(OTHER) in refused["message"]
    assert "from-container" not in ketch.Dict.from_name(elsewhere, environment_name=OTHER)
    ketch.Dict.delete(name)
    ketch.Dict.delete(elsewhere, environment_name=OTHER)


def test_a_credential_dies_with_its_container(server: ServerHandle, helpers: None) -> None:
    with app.run(show_logs=False):
        me = whoami.remote()
        # While its container runs, the credential says hello as an SDK client.
        assert _client_hello(server, me["token"])["t"] == "welcome"
    deadline = time.monotonic() + 60
    while me["cid"] in _containers(server):
        assert time.monotonic() < deadline, "the app's container did not go"
        time.sleep(0.1)
    answer = _client_hello(server, me["token"])
    assert answer == {"t": "denied", "reason": "bad token"}


def test_a_credential_says_hello_as_its_own_container_only(running: ServerHandle) -> None:
    me = whoami.remote()
    answer = _hello(running, {"role": "container", "cid": "ta-someone-else", "token": me["token"]})
    assert answer["t"] == "denied" and "another container" in answer["reason"]
    # The server token still may (told to stop: no such container is starting).
    answer = _hello(
        running, {"role": "container", "cid": "ta-someone-else", "token": _server_token(running)}
    )
    assert answer["t"] == "stop"
