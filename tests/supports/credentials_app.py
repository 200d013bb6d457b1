"""Apps for the container credential tests (SPEC I4): functions that use, from inside
their container, whatever their credential lets them (and report what was refused)."""

import http.client
import json
import os
from collections.abc import Callable
from typing import Any

import ketch

app = ketch.App("credentials")
# Deployed by the test, once in "main" and once in another environment.
helper = ketch.App("credentials-helper")


@helper.function()
def double(x: int) -> int:
    return 2 * x


@app.function()
def whoami() -> dict[str, str]:
    """The container's id and its credential (a test value: a real one is never shown)."""
    return {"cid": os.environ["KETCH_CONTAINER_ID"], "token": os.environ["KETCH_TOKEN"]}


@app.function()
def http_status(host: str, port: int, method: str, path: str, body: dict[str, Any]) -> int:
    """The API's status for a request with this container's credential."""
    conn = http.client.HTTPConnection(host, port, timeout=30)
    headers = {
        "Authorization": f"Bearer {os.environ['KETCH_TOKEN']}",
        "Content-Type": "application/json",
    }
    try:
        conn.request(method, path, body=json.dumps(body), headers=headers)
        return conn.getresponse().status
    finally:
        conn.close()


def _outcome(action: Callable[[], Any]) -> dict[str, Any]:
    try:
        return {"ok": True, "value": action()}
    except Exception as exc:
        return {"ok": False, "type": type(exc).__name__, "message": str(exc)}


@app.function()
def call_helper(environment: str, x: int) -> dict[str, Any]:
    f = ketch.Function.from_name("credentials-helper", "double", environment_name=environment)
    return _outcome(lambda: f.remote(x))


@app.function()
def use_dict(name: str, environment: str) -> dict[str, Any]:
    def go() -> Any:
        d = ketch.Dict.from_name(name, environment_name=environment, create_if_missing=True)
        d["from-container"] = 42
        return d["from-container"]

    return _outcome(go)
