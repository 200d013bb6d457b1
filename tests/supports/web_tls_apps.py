"""Endpoints with custom domains for the TLS and domain tests (W8): plain ASGI callables
that answer with what they were asked (endpoint, Host, X-Forwarded-Proto) and echo
WebSocket messages. Only ketch and the standard library."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

import ketch

app = ketch.App("web-tls")
clash_app = ketch.App("web-tls-clash")

ASGI = Callable[[dict[str, Any], Any, Any], Awaitable[None]]


def echo_app(name: str) -> ASGI:
    async def asgi(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                else:
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        elif scope["type"] == "http":
            headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
            body = json.dumps(
                {
                    "endpoint": name,
                    "host": headers.get("host"),
                    "proto": headers.get("x-forwarded-proto"),
                    "path": scope["path"],
                }
            ).encode()
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [
                        (b"content-type", b"application/json"),
                        (b"content-length", str(len(body)).encode()),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": body})
        elif scope["type"] == "websocket":
            await receive()  # websocket.connect
            await send({"type": "websocket.accept"})
            while True:
                message = await receive()
                if message["type"] == "websocket.disconnect":
                    return
                if message.get("text") is not None:
                    await send({"type": "websocket.send", "text": f"{name}:{message['text']}"})
                else:
                    await send({"type": "websocket.send", "bytes": message["bytes"]})

    return asgi


@app.function()
@ketch.asgi_app(custom_domains=["*.example.com", "www.example.net"])
def wild() -> ASGI:
    return echo_app("wild")


@app.function()
@ketch.asgi_app(custom_domains=["api.example.com", "api.example.net"])
def exact() -> ASGI:
    return echo_app("exact")


@clash_app.function()
@ketch.asgi_app(custom_domains=["api.example.com"])
def clash() -> ASGI:
    return echo_app("clash")
