"""Endpoints for the gateway's smuggling and fuzz tests: every request a handler sees is
recorded, and every response names the request it answers.

`guarded` needs proxy auth (W15), `open_ws` is public and speaks WebSocket at `/ws`,
`plain` is public and speaks plain HTTP only: all three are bare ASGI apps on the
container's uvicorn. `guarded_server` needs proxy auth too, and is the standard library's
HTTP/1.1 server behind `web_server`: it knows nothing of upgrades, so it serves a handshake
as a plain GET and goes on reading requests on the same connection, as many servers do.

Each appends one JSON line per request (HTTP or WebSocket handshake) to
`record_path(app_id)` before answering: a request the gateway should have stopped leaves a
line even when its response goes nowhere.

Responses are `<function> <method> <path>?<query>` in plain text, so a response that
reaches the wrong client says so. Only ketch and the standard library: the handlers are
bare ASGI, so nothing routes or refuses a request before it is recorded.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import ketch
from supports.shared_tmp import shared_tmp

app = ketch.App("ketch-gateway-guarded")

# A path with "slow" in it is answered after this long: a response still to come when the
# next request arrives on the same connection.
SLOW = 0.5


def record_path(app_id: str) -> Path:
    return shared_tmp() / f"ketch-test-gateway-{app_id}.jsonl"


def records(app_id: str) -> list[dict[str, Any]]:
    """What the handlers of a running app saw so far, oldest first."""
    path = record_path(app_id)
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


_lock = threading.Lock()


def _write(fn: str, kind: str, name: str, headers: list[str]) -> str:
    line = json.dumps({"fn": fn, "type": kind, "request": name, "headers": sorted(headers)})
    with _lock, open(record_path(os.environ["KETCH_APP_ID"]), "a") as fh:
        fh.write(line + "\n")
    return f"{fn} {name}"


def _record(fn: str, scope: dict[str, Any]) -> str:
    query = scope.get("query_string", b"").decode("latin-1")
    name = f"{scope.get('method', 'WS')} {scope['path']}?{query}"
    return _write(fn, scope["type"], name, [k.decode("latin-1") for k, _ in scope["headers"]])


def _recording_app(fn: str, websocket: bool) -> Any:
    async def asgi(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            body = _record(fn, scope).encode()
            if "slow" in scope["path"]:
                await asyncio.sleep(SLOW)
            while True:  # the whole body, so that the connection can be kept
                message = await receive()
                if message["type"] != "http.request" or not message.get("more_body"):
                    break
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [
                        (b"content-type", b"text/plain"),
                        (b"content-length", b"%d" % len(body)),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": body})
        elif scope["type"] == "websocket":
            _record(fn, scope)
            await receive()  # websocket.connect
            if not websocket or scope["path"] != "/ws":
                # Refused before accepting: the server answers the handshake with a 403.
                await send({"type": "websocket.close", "code": 1008})
                return
            await send({"type": "websocket.accept"})
            while True:
                message = await receive()
                if message["type"] == "websocket.disconnect":
                    return
                await send(
                    {
                        "type": "websocket.send",
                        "text": message.get("text"),
                        "bytes": message.get("bytes"),
                    }
                )

    return asgi


@app.function(max_containers=1)
@ketch.concurrent(max_inputs=50)
@ketch.asgi_app(requires_proxy_auth=True)
def guarded() -> Any:
    return _recording_app("guarded", websocket=True)


@app.function(max_containers=1)
@ketch.concurrent(max_inputs=50)
@ketch.asgi_app()
def open_ws() -> Any:
    return _recording_app("open_ws", websocket=True)


@app.function(max_containers=1)
@ketch.concurrent(max_inputs=50)
@ketch.asgi_app()
def plain() -> Any:
    return _recording_app("plain", websocket=False)


class _Recorder(BaseHTTPRequestHandler):
    """Records, reads the body (chunked too, as HTTP/1.1 asks), answers and keeps the
    connection."""

    protocol_version = "HTTP/1.1"

    def _serve(self) -> None:
        path, _, query = self.path.partition("?")
        text = _write(
            "guarded_server",
            "http",
            f"{self.command} {path}?{query}",
            [k.lower() for k in self.headers],
        )
        if "slow" in path:
            time.sleep(SLOW)
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            while True:
                size = int(self.rfile.readline().split(b";")[0], 16)
                self.rfile.read(size + 2)
                if size == 0:
                    break
        else:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
        body = text.encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _serve

    def log_message(self, format: str, *args: Any) -> None:
        pass


SERVER_PORT = 8731


@app.function(max_containers=1)
@ketch.concurrent(max_inputs=50)
@ketch.web_server(SERVER_PORT, startup_timeout=30, requires_proxy_auth=True)
def guarded_server() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", SERVER_PORT), _Recorder)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
