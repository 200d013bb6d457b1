"""Web endpoints: each function becomes a one-route FastAPI app with a URL of its own.

    ketch run examples/web.py      # start the app, call every endpoint, stop
    ketch serve examples/web.py    # keep serving (edits go live); then, for example:
    curl "$SQUARE_URL?x=42"
    curl -X POST -H 'Content-Type: application/json' --data '{"x": 42}' "$SQUARE_POST_URL"

Every function here is a web endpoint, so its container has FastAPI and pydantic even on
the default image: the module may import them at the top.
"""

import json
import urllib.request
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse
from pydantic import BaseModel

import ketch

app = ketch.App("web")


class Item(BaseModel):
    name: str
    qty: int = 42


@app.function()
@ketch.fastapi_endpoint()
def hello() -> str:
    return "Hello world!"


@app.function()
@ketch.fastapi_endpoint()
def square(x: int) -> dict[str, int]:
    """Query parameters become typed arguments (a missing or non-integer x gets a 422)."""
    return {"square": x**2}


@app.function()
@ketch.fastapi_endpoint(method="POST")
def square_post(item: dict[str, Any]) -> dict[str, int]:
    """Any JSON object as the body."""
    return {"square": item["x"] ** 2}


@app.function()
@ketch.fastapi_endpoint(method="POST")
def greet(item: Item) -> HTMLResponse:
    """A validated body, and a response of the handler's own making."""
    return HTMLResponse(f"<html>Hello, {item.name}! ({item.qty})</html>")


@app.function()
@ketch.fastapi_endpoint()
def get_ip(request: Request) -> str:
    assert request.client is not None
    return f"Your IP address is {request.client.host}"


@app.function()
@ketch.fastapi_endpoint(docs=True, label="web-show-url")
def show_url() -> str | None:
    """Its own URL, from inside its container; docs=True also serves /docs."""
    return show_url.get_web_url()


def call(fn: ketch.Function, query: str = "", body: Any = None) -> str:
    url = f"{fn.get_web_url()}{query}"
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as resp:
        return str(resp.read().decode())


@app.local_entrypoint()
def main(x: int = 42) -> None:
    print("hello:", call(hello))
    print("square:", call(square, f"?x={x}"))
    print("square_post:", call(square_post, body={"x": x}))
    print("greet:", call(greet, body={"name": "Erik", "qty": 10}))
    print("get_ip:", call(get_ip))
    print("show_url is its own URL:", json.loads(call(show_url)) == show_url.get_web_url())
    with urllib.request.urlopen(f"{show_url.get_web_url()}/docs", timeout=60) as resp:
        print("show_url serves docs:", resp.status)
