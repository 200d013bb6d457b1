"""The management API checks every request at its edge (issue 11): a body, path or query
that does not fit its schema is a 422 naming the field, and nothing of it is stored."""

from __future__ import annotations

import copy
import io
import json
import re
import sqlite3
import tarfile
import uuid
from typing import Any

import httpx
import pytest

from conftest import ServerHandle


def _api(server: ServerHandle) -> tuple[str, dict[str, str]]:
    info = server.info()
    token = (server.home / "token").read_text().strip()
    return f"http://127.0.0.1:{info['api_port']}", {"Authorization": f"Bearer {token}"}


def _deploy_body(name: str) -> dict[str, Any]:
    """A deploy body exactly as the SDK makes it, for a small real app."""
    import supports.basic as basic
    from ketch._app_spec import app_spec

    spec = app_spec(basic.app, name=name, environment="main", ephemeral=False)
    return json.loads(json.dumps(spec))


def _stored_names(server: ServerHandle) -> set[str]:
    db = sqlite3.connect(f"file:{server.home / 'ketch.db'}?mode=ro", uri=True)
    try:
        names = {r[0] for r in db.execute("SELECT name FROM apps")}
        for (spec,) in db.execute("SELECT spec FROM app_versions"):
            names.add(json.loads(spec).get("name"))
        return names
    finally:
        db.close()


def _error(resp: httpx.Response) -> str:
    body = resp.json()
    assert body["error"]["type"] == "InvalidError", body
    return str(body["error"]["message"])


@pytest.mark.spec("C5")
@pytest.mark.parametrize(
    ("field", "change"),
    [
        ("options", lambda f: f.update(options="x")),
        ("max_inputs", lambda f: f["options"].update(max_inputs="abc")),
        ("max_inputs", lambda f: f["options"].update(max_inputs="5")),  # no coercion either
        ("scaledown_window", lambda f: f["options"].update(scaledown_window=None)),
        ("min_containers", lambda f: f["options"].update(min_containers=10**30)),
        ("retries", lambda f: f["options"].update(retries={"max_retries": "3"})),
        ("image", lambda f: f.update(image="debian")),
        ("type", lambda f: f["image"].update(steps=[{"type": "rm -rf"}])),
        ("secrets", lambda f: f.update(secrets=[{"kind": "inline", "values": {"K": 1}}])),
        ("volumes", lambda f: f.update(volumes="/data")),
        ("web", lambda f: f.update(web={"type": "fastapi", "method": "BREW"})),
        ("unknown_key", lambda f: f.update(unknown_key=1)),
    ],
)
def test_a_malformed_deploy_is_refused_and_stores_nothing(server, field, change) -> None:
    base, headers = _api(server)
    name = f"bad-deploy-{uuid.uuid4().hex[:8]}"
    body = _deploy_body(name)
    change(body["functions"]["square"])
    resp = httpx.post(f"{base}/v1/apps/deploy", headers=headers, json=body)
    assert resp.status_code == 422, resp.text
    message = _error(resp)
    assert "functions.square" in message and field in message, message
    assert any(d["loc"][:3] == ["body", "functions", "square"] for d in resp.json()["detail"])
    assert name not in {a["name"] for a in httpx.get(f"{base}/v1/apps", headers=headers).json()}
    assert name not in _stored_names(server)


@pytest.mark.spec("C5")
def test_the_sdks_own_deploy_body_fits_the_schema(server) -> None:
    """The other side of the contract: what the SDK sends passes, unchanged in meaning."""
    from ketch._server.api_models import DeployIn

    body = _deploy_body("basic")
    dumped = DeployIn.model_validate(copy.deepcopy(body)).model_dump(
        mode="json", by_alias=True, exclude_unset=True
    )
    assert dumped == body
    base, _ = _api(server)
    schema = httpx.get(f"{base}/openapi.json").json()
    request = schema["paths"]["/v1/apps/deploy"]["post"]["requestBody"]
    assert request["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/DeployIn"
    }
    options = schema["components"]["schemas"]["OptionsSpec"]["properties"]
    assert options["max_inputs"]["type"] == "integer"


@pytest.mark.spec("C3")
@pytest.mark.parametrize(
    "body",
    [
        {"name": "ok-name", "values": {"K": 1}},
        {"name": "ok-name", "values": "K=V"},
        {"name": "bad name", "values": {"K": "v"}},
        {"name": "ok-name", "values": {"K": "v"}, "environment": "bad env"},
        {"name": "ok-name", "values": {"K": "v\u0000"}},
        {"name": "ok-name", "values": {"K": "v"}, "force": "yes"},
        {"name": "ok-name", "values": {}},
        ["ok-name"],
    ],
)
def test_a_malformed_secret_is_refused_and_stores_nothing(server, body) -> None:
    base, headers = _api(server)
    before = httpx.get(f"{base}/v1/secrets", headers=headers).json()
    resp = httpx.post(f"{base}/v1/secrets", headers=headers, json=body)
    assert resp.status_code == 422, resp.text
    _error(resp)
    assert httpx.get(f"{base}/v1/secrets", headers=headers).json() == before


@pytest.mark.spec("D4")
def test_malformed_volume_requests_are_refused(server) -> None:
    base, headers = _api(server)
    before = httpx.get(f"{base}/v1/volumes", headers=headers).json()
    bodies: list[Any] = [
        {"name": 5},
        {"name": "a/b"},
        {"name": "ok", "create_if_missing": "yes"},
        [],
    ]
    for body in bodies:
        resp = httpx.post(f"{base}/v1/volumes", headers=headers, json=body)
        assert resp.status_code == 422, resp.text
    vol = httpx.post(f"{base}/v1/volumes/ephemeral", headers=headers, json={}).json()
    vid = vol["volume_id"]
    try:
        files = f"{base}/v1/volumes/{vid}/files"
        for params in ({"path": "a\x00b"}, {"path": "x", "mode": str(2**70)}, {"path": "x" * 5000}):
            resp = httpx.put(files, headers=headers, params=params, content=b"data")
            assert resp.status_code == 422, resp.text
        # A name longer than the filesystem allows is the request's fault too.
        resp = httpx.put(files, headers=headers, params={"path": "n" * 300}, content=b"x")
        assert resp.status_code == 400, resp.text
        resp = httpx.post(f"{base}/v1/volumes/{vid}/exists", headers=headers, json={"paths": [1]})
        assert resp.status_code == 422, resp.text
    finally:
        httpx.delete(f"{base}/v1/volumes/{vid}", headers=headers)
    assert httpx.get(f"{base}/v1/volumes", headers=headers).json() == before


@pytest.mark.spec("C5")
def test_a_source_blob_that_is_not_an_archive_is_a_clear_error(server) -> None:
    base, headers = _api(server)
    data = b"not a tar archive " + uuid.uuid4().bytes
    import hashlib

    sha = hashlib.sha256(data).hexdigest()
    assert httpx.put(f"{base}/v1/blobs/{sha}", headers=headers, content=data).status_code == 200
    name = f"bad-source-{uuid.uuid4().hex[:8]}"
    body = {**_deploy_body(name), "source": {"blob": sha}}
    resp = httpx.post(f"{base}/v1/apps/deploy", headers=headers, json=body)
    assert resp.status_code == 400, resp.text
    assert "not a usable source archive" in _error(resp)
    assert name not in _stored_names(server)
    # An archive whose members would land outside its directory is refused the same way.
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        info = tarfile.TarInfo("../escape.py")
        payload = uuid.uuid4().hex.encode()
        info.size = len(payload)
        tar.addfile(info, io.BytesIO(payload))
    sha = hashlib.sha256(buf.getvalue()).hexdigest()
    httpx.put(f"{base}/v1/blobs/{sha}", headers=headers, content=buf.getvalue())
    resp = httpx.post(
        f"{base}/v1/apps/deploy", headers=headers, json={**body, "source": {"blob": sha}}
    )
    assert resp.status_code == 400, resp.text
    assert not (server.home / "sources" / "escape.py").exists()


def _sample_path(path: str) -> str:
    """A concrete URL for an OpenAPI path: each {param} filled with a well-formed value."""
    samples = {
        "sha": "0" * 64,
        "name": "no-such-app",
        "cid": "ta-none",
        "call_id": "fc-none",
        "vid": "vo-none",
        "token_id": "wk-none",
        "prefix": "0000",
        "function": "no-such-function",
        "function_id": "fu-none",
        "sandbox_id": "sb-none",
        "owner": "sb-none",
        "app_name": "no-such-app",
        "pid": "pr-none",
        "fd": "1",
        "port": "8000",
    }
    return re.sub(r"\{(\w+)\}", lambda m: samples[m[1]], path)


@pytest.mark.spec("C4")
@pytest.mark.parametrize(
    "authorization",
    [
        "Bearer é".encode(),
        b"Bearer \xff\xfe",
        "ключ".encode(),
        b"\x80",
        b"Bearer",
    ],
)
def test_garbage_credentials_get_401_on_every_protected_route(server, authorization) -> None:
    base, _ = _api(server)
    doc = httpx.get(f"{base}/openapi.json").json()
    seen = 0
    with httpx.Client(base_url=base) as http:
        for path, ops in doc["paths"].items():
            if path == "/v1/health":
                continue
            for method in ops:
                resp = http.request(
                    method.upper(),
                    _sample_path(path),
                    headers={"Authorization": authorization},
                    content=b"{}",
                )
                assert resp.status_code == 401, (method, path, resp.status_code, resp.text)
                seen += 1
    assert seen >= 30


@pytest.mark.spec("C4")
def test_the_token_is_checked_before_any_body_is_read_on_every_route(server) -> None:
    """Without the token, a body that would not even parse gets 401, never 422: the check
    runs before the body is read, for routes of included routers too."""
    base, _ = _api(server)
    doc = httpx.get(f"{base}/openapi.json").json()
    seen = 0
    with httpx.Client(base_url=base) as http:
        for path, ops in doc["paths"].items():
            for method, op in ops.items():
                if not op.get("security"):
                    continue
                resp = http.request(
                    method.upper(),
                    _sample_path(path),
                    content=b'{"x": ',
                    headers={"content-type": "application/json"},
                )
                assert resp.status_code == 401, (method, path, resp.status_code, resp.text)
                seen += 1
    assert seen >= 30


@pytest.mark.spec("C4")
def test_only_the_documented_public_routes_go_without_the_token(server) -> None:
    from ketch._server.api.core import PUBLIC_PATHS

    base, _ = _api(server)
    doc = httpx.get(f"{base}/openapi.json").json()
    public = {
        path for path, ops in doc["paths"].items() for op in ops.values() if not op.get("security")
    }
    assert public == set(PUBLIC_PATHS)
