"""FastAPI endpoints for the web tests: requests and responses (W1), URLs (W5, W9), proxy
auth (W15), the caller's address (W16), uploads (W12) and cold starts (S2).

Every function here is a web endpoint, so the containers have FastAPI and pydantic on
their path when they import this module: the top-level imports below prove that.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import threading
from typing import Any

from fastapi import Request
from pydantic import BaseModel

import ketch

app = ketch.App("ketch-web-ep")

CUSTOM_LABEL = "ketch-test-custom-label"


class Item(BaseModel):
    name: str
    qty: int = 42


@app.function()
@ketch.fastapi_endpoint()
def square(x: int) -> dict[str, int]:
    return {"square": x * x}


@app.function()
@ketch.fastapi_endpoint()
async def async_square(x: int) -> dict[str, Any]:
    await asyncio.sleep(0)
    return {"square": x * x, "async": True}


@app.function()
@ketch.fastapi_endpoint(method="POST")
def post_dict(item: dict[str, Any]) -> dict[str, Any]:
    return {"square": item["x"] ** 2}


@app.function()
@ketch.fastapi_endpoint(method="POST")
def post_model(item: Item) -> dict[str, Any]:
    return {"processed": item.name, "quantity": item.qty}


@app.function()
@ketch.fastapi_endpoint()
def teapot() -> Any:
    from fastapi.responses import PlainTextResponse

    return PlainTextResponse(
        "short and stout", status_code=418, headers={"x-ketch-test": "passed through"}
    )


@app.function()
@ketch.fastapi_endpoint(docs=True)
def documented(name: str = "world") -> str:
    return f"hello {name}"


@app.function()
@ketch.fastapi_endpoint(method="PUT")
def whoami(request: Request) -> dict[str, Any]:
    """What the handler sees of the caller: its address and every header."""
    assert request.client is not None
    return {
        "client": request.client.host,
        "method": request.method,
        "thread": threading.current_thread().name,
        "headers": {k: v for k, v in request.headers.items()},
    }


@app.function()
@ketch.fastapi_endpoint(requires_proxy_auth=True)
def protected(request: Request) -> dict[str, Any]:
    return {"ok": True, "headers": sorted(request.headers.keys())}


@app.function()
@ketch.fastapi_endpoint()
def show_url() -> str | None:
    return show_url.get_web_url()


@app.function()
@ketch.fastapi_endpoint(label=CUSTOM_LABEL)
def labelled() -> str:
    return "labelled"


@app.function()
@ketch.fastapi_endpoint()
def an_unusually_long_function_name_that_overflows_the_host_label() -> str:
    return "long"


@app.function()
@ketch.fastapi_endpoint()
def cold() -> dict[str, int]:
    return {"pid": os.getpid()}


@app.function()
@ketch.fastapi_endpoint(method="POST")
async def upload(request: Request) -> dict[str, Any]:
    """Hashes the body as it streams in: nothing holds all of it."""
    digest = hashlib.sha256()
    size = 0
    async for chunk in request.stream():
        digest.update(chunk)
        size += len(chunk)
    return {"size": size, "sha256": digest.hexdigest()}
