"""Whole web apps: a FastAPI (ASGI) app with a lifespan, and a Flask (WSGI) app.

    ketch run examples/web_apps.py
    ketch serve examples/web_apps.py
    curl -X POST -H 'Content-Type: application/json' --data '{"hi": 1}' "$FASTAPI_APP_URL/echo"

FastAPI comes with every web container; Flask is installed into the image.
"""

import json
import urllib.request
from typing import Any

import ketch

app = ketch.App("web-apps")

flask_image = ketch.Image.debian_slim().pip_install("flask")


@app.function()
@ketch.concurrent(max_inputs=100)  # one container serves many requests at once
@ketch.asgi_app()
def fastapi_app() -> Any:
    from contextlib import asynccontextmanager

    from fastapi import FastAPI, Request

    @asynccontextmanager
    async def lifespan(wapp: FastAPI) -> Any:
        print("Starting")  # once per container, before its first request
        yield
        print("Shutting down")  # once, when the container stops

    web_app = FastAPI(lifespan=lifespan)

    @web_app.get("/")
    async def root() -> dict[str, str]:
        return {"message": "Hello"}

    @web_app.post("/echo")
    async def echo(request: Request) -> Any:
        return await request.json()

    return web_app


@app.function(image=flask_image)
@ketch.concurrent(max_inputs=100)  # WSGI apps are synchronous: requests run on threads
@ketch.wsgi_app()
def flask_app() -> Any:
    from flask import Flask, request

    web_app = Flask(__name__)

    @web_app.post("/echo")
    def echo() -> Any:
        return request.json

    return web_app


def fetch(url: str, body: Any = None) -> str:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as resp:
        return str(resp.read().decode()).strip()


@app.local_entrypoint()
def main() -> None:
    print("fastapi /:", fetch(f"{fastapi_app.get_web_url()}/"))
    print("fastapi /echo:", fetch(f"{fastapi_app.get_web_url()}/echo", {"from": "asgi"}))
    print("flask /echo:", fetch(f"{flask_app.get_web_url()}/echo", {"from": "wsgi"}))
