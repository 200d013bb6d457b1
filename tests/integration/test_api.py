"""The management API: an OpenAPI document, token authentication, clear errors."""

from __future__ import annotations

import json

import httpx
import pytest


def _base(server) -> tuple[str, str]:  # type: ignore[no-untyped-def]
    info = server.info()
    token = (server.home / "token").read_text().strip()
    return f"http://127.0.0.1:{info['api_port']}", token


@pytest.mark.spec("C5", "C4")
def test_openapi_document_and_token(server) -> None:  # type: ignore[no-untyped-def]
    base, token = _base(server)
    doc = httpx.get(f"{base}/openapi.json").json()
    for path in ("/v1/apps", "/v1/apps/deploy", "/v1/secrets", "/v1/tokens", "/v1/status"):
        assert path in doc["paths"], path
    assert httpx.get(f"{base}/v1/apps").status_code == 401
    assert httpx.get(f"{base}/v1/apps", headers={"Authorization": "Bearer nope"}).status_code == 401
    ok = httpx.get(f"{base}/v1/apps", headers={"Authorization": f"Bearer {token}"})
    assert ok.status_code == 200 and isinstance(ok.json(), list)


@pytest.mark.spec("C5")
def test_bad_deploy_specs_change_nothing(server) -> None:  # type: ignore[no-untyped-def]
    base, token = _base(server)
    headers = {"Authorization": f"Bearer {token}"}
    before = httpx.get(f"{base}/v1/apps", headers=headers).json()
    for spec in (
        {"name": "bad name!", "functions": {"f": {}}},
        {"name": "nofuncs", "functions": {}},
        {"name": "badtag", "functions": {"no such-tag": {}}},
    ):
        resp = httpx.post(f"{base}/v1/apps/deploy", headers=headers, json=spec)
        lines = [json.loads(x) for x in resp.text.splitlines() if x.strip()]
        assert lines[-1]["error"]["type"] == "InvalidError", lines
    assert httpx.get(f"{base}/v1/apps", headers=headers).json() == before
    missing = httpx.post(f"{base}/v1/apps/nope-{id(headers)}/stop", headers=headers)
    assert missing.status_code == 404 and missing.json()["error"]["type"] == "NotFoundError"
