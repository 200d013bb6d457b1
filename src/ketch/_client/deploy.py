"""The management API over HTTP, from the SDK and the CLI: deploys, apps, secrets, tokens.

What a deploy sends is built by the SDK (`ketch._app_spec`); this side only carries it."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ketch._client.discovery import ensure_server
from ketch.config import Config
from ketch.exception import Error

if TYPE_CHECKING:
    pass

Log = Callable[[str], None]

# `--force-build` sets the first; Modal scripts and CI set MODAL_FORCE_BUILD, as for Modal.
FORCE_BUILD_VARS = ("KETCH_FORCE_BUILD", "MODAL_FORCE_BUILD")


def force_build_requested() -> bool:
    """Whether images are to be built again even when cached (`--force-build`)."""
    return any(
        os.environ.get(var, "").strip().lower() in ("1", "true", "yes", "on")
        for var in FORCE_BUILD_VARS
    )


class ApiClient:
    """The management API over HTTP (deploys, app list, secrets)."""

    def __init__(self, config: Config | None = None, *, start: bool = True) -> None:
        self.config = config or Config.load()
        self.start = start  # False: fail rather than start a server on demand

    async def _http(self) -> Any:
        import asyncio

        import httpx

        info = await asyncio.to_thread(ensure_server, self.config, start=self.start)
        return httpx.AsyncClient(
            base_url=info.api_url,
            headers={"Authorization": f"Bearer {info.token}"},
            timeout=httpx.Timeout(30.0, read=None),
        )

    async def call(self, method: str, path: str, **kwargs: Any) -> Any:
        async with await self._http() as http:
            resp = await http.request(method, path, **kwargs)
        return json_or_raise(resp)

    async def put_blob(self, data: bytes) -> str:
        sha = hashlib.sha256(data).hexdigest()
        await self.call("PUT", f"/v1/blobs/{sha}", content=data)
        return sha

    async def deploy(self, spec: dict[str, Any], log: Log) -> dict[str, Any]:
        async with (
            await self._http() as http,
            http.stream("POST", "/v1/apps/deploy", json=spec) as resp,
        ):
            if resp.status_code != 200:
                await resp.aread()
                json_or_raise(resp)
            async for line in resp.aiter_lines():
                if not line.strip():
                    continue
                item = json.loads(line)
                if "log" in item:
                    log(item["log"])
                elif "result" in item:
                    result: dict[str, Any] = item["result"]
                    return result
                elif "error" in item:
                    raise error_from(item["error"])
        raise Error("the server ended the deploy without a result")


def error_from(err: dict[str, Any]) -> Error:
    import ketch.exception as kex

    cls = getattr(kex, str(err.get("type", "Error")), None)
    if not (isinstance(cls, type) and issubclass(cls, Error)):
        cls = Error
    return cls(err.get("message", "unknown error"))


def json_or_raise(resp: Any) -> Any:
    try:
        body = resp.json()
    except ValueError:
        body = None
    if resp.status_code >= 400:
        if isinstance(body, dict) and isinstance(body.get("error"), dict):
            raise error_from(body["error"])
        detail = body.get("detail") if isinstance(body, dict) else resp.text
        from ketch.exception import AuthError

        if resp.status_code == 401:
            raise AuthError(str(detail))
        raise Error(f"server answered {resp.status_code}: {detail}")
    return body


async def deploy_spec(
    spec: dict[str, Any], source: bytes | None, log: Log, config: Config | None = None
) -> dict[str, Any]:
    """Send a built deploy body (and its source archive, if any) to the server; the answer
    names the app, its version and its functions' ids and URLs."""
    api = ApiClient(config)
    if force_build_requested():
        spec = {**spec, "force_build": True}
    if source is not None:
        spec = {**spec, "source": {"blob": await api.put_blob(source)}}
    result: dict[str, Any] = await api.deploy(spec, log)
    return result
