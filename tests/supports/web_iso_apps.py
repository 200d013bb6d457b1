"""`web_server` functions for the network isolation tests (W4, W11, A2b, R5).

Every function serves on port 8000, so two containers of one function on one host would
collide without a network namespace each. Only ketch and the standard library: the
servers are the standard library's own.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import struct
import subprocess
import sys
import tempfile
import threading
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from io import BufferedIOBase
from typing import Any

import ketch
from supports import ident

app = ketch.App("web-iso")
files_app = ketch.App("web-iso-files")  # its containers start with the app: kept apart

PORT = 8000
BIG_FILE_SIZE = 256 * 2**20  # sparse: larger than every buffer between server and client
_WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def whoami() -> dict[str, Any]:
    return {
        "cid": os.environ.get("KETCH_CONTAINER_ID"),
        "pid": ident.me(),  # by `supports.ident`: a sandboxed pid is not unique
        "host_addr": os.environ.get("KETCH_HOST_ADDR"),
    }


# -- a tiny RFC 6455 server side, enough for echoing messages --------------------------------


def _read_exact(stream: BufferedIOBase, n: int) -> bytes:
    data = stream.read(n)
    if data is None or len(data) < n:
        raise EOFError
    return data


def read_frame(stream: BufferedIOBase) -> tuple[int, bytes]:
    """One whole message (fragments joined): (opcode, payload)."""
    opcode = 0
    parts: list[bytes] = []
    while True:
        b0, b1 = _read_exact(stream, 2)
        opcode = opcode or b0 & 0x0F
        length = b1 & 0x7F
        if length == 126:
            length = struct.unpack("!H", _read_exact(stream, 2))[0]
        elif length == 127:
            length = struct.unpack("!Q", _read_exact(stream, 8))[0]
        mask = _read_exact(stream, 4) if b1 & 0x80 else b"\0\0\0\0"
        raw = _read_exact(stream, length)
        unmasked = (
            int.from_bytes(raw, "big") ^ int.from_bytes((mask * (length // 4 + 1))[:length], "big")
        ).to_bytes(length, "big")
        parts.append(unmasked)
        if b0 & 0x80:
            return opcode, b"".join(parts)


def frame(opcode: int, payload: bytes) -> bytes:
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", 0x80 | opcode, n)
    elif n < 2**16:
        head = struct.pack("!BBH", 0x80 | opcode, 126, n)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 127, n)
    return head + payload


class EchoHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, and the 101 of a WebSocket upgrade

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _json(self, data: dict[str, Any]) -> None:
        body = json.dumps(data).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        url = urllib.parse.urlsplit(self.path)
        query = dict(urllib.parse.parse_qsl(url.query))
        if self.headers.get("Upgrade", "").lower() == "websocket":
            self._websocket()
        elif url.path == "/whoami":
            self._json(whoami())
        elif url.path == "/fetch":
            # A service on the host's own loopback, through the documented address.
            host = os.environ.get("KETCH_HOST_ADDR", "127.0.0.1")
            target = f"http://{host}:{query['port']}{query['path']}"
            try:
                with urllib.request.urlopen(target, timeout=60) as resp:
                    body = resp.read().decode()
            except OSError as exc:
                self._json({**whoami(), "error": repr(exc)})
                return
            self._json({**whoami(), "fetched": body})
        else:
            self.send_error(404)

    def _websocket(self) -> None:
        accept = base64.b64encode(
            hashlib.sha1((self.headers["Sec-WebSocket-Key"] + _WS_GUID).encode()).digest()
        ).decode()
        self.send_response(101)
        self.send_header("Upgrade", "websocket")
        self.send_header("Connection", "Upgrade")
        self.send_header("Sec-WebSocket-Accept", accept)
        self.end_headers()
        self.wfile.flush()
        self.close_connection = True
        cid = os.environ.get("KETCH_CONTAINER_ID", "")
        while True:
            try:
                opcode, payload = read_frame(self.rfile)
            except (EOFError, OSError):
                return
            if opcode == 0x8:  # close: answer it, then the connection ends
                self.wfile.write(frame(0x8, payload[:2]))
                return
            if opcode == 0x9:
                self.wfile.write(frame(0xA, payload))
            elif opcode == 0x1:
                self.wfile.write(frame(0x1, f"{cid}:".encode() + payload))
            elif opcode == 0x2:
                self.wfile.write(frame(0x2, payload))
            self.wfile.flush()


@app.function(max_containers=2)
@ketch.concurrent(max_inputs=1)
@ketch.web_server(PORT, startup_timeout=30)
def echo() -> None:
    """A server in the container's own process, listening on 127.0.0.1 only."""
    server = ThreadingHTTPServer(("127.0.0.1", PORT), EchoHandler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()


@files_app.function(min_containers=2, max_containers=2)
@ketch.concurrent(max_inputs=1)
@ketch.web_server(PORT, startup_timeout=30)
def files() -> None:
    """`python -m http.server 8000` (all addresses) in a subprocess, serving a directory
    that names the container: id.txt (the name and the directory, which the test removes)
    and a big sparse file that starts with the same line."""
    root = tempfile.mkdtemp(prefix="ketch-web-iso-")
    line = f"{os.environ['KETCH_CONTAINER_ID']} {root}\n"
    with open(os.path.join(root, "id.txt"), "w") as fh:
        fh.write(line)
    with open(os.path.join(root, "big.bin"), "wb") as fh:
        fh.write(line.encode())
        fh.truncate(BIG_FILE_SIZE)
    subprocess.Popen(
        [sys.executable, "-m", "http.server", str(PORT)],
        cwd=root,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


@app.function(block_network=True)
@ketch.web_server(PORT, startup_timeout=30)
def blocked() -> None:
    """block_network: web traffic still comes in; nothing goes out, the host included."""
    server = ThreadingHTTPServer(("0.0.0.0", PORT), EchoHandler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()


@app.function()
@ketch.web_server(PORT, startup_timeout=1)
def never_listens() -> None:
    """Starts nothing: no request can be served (R5)."""


@app.function()
@ketch.web_server(PORT, startup_timeout=30)
def fails_to_start() -> None:
    raise RuntimeError("the web_server function could not start its server")
