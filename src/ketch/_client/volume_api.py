"""The SDK's way to the volume routes of the management API.

From a client process: TCP to the API port of the server for KETCH_HOME (started on
demand). Inside a container: the API's unix socket beside the call socket, which works in
every network setup, `block_network` included.

It speaks HTTP with the standard library's `http.client` (in a worker thread), because
containers carry only ketch and cloudpickle from the server, and must not get an HTTP
library that could shadow the user's own version of it.
"""

from __future__ import annotations

import asyncio
import builtins
import json
import os
import socket
import urllib.parse
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from ketch._client.discovery import ServerInfo, ensure_server, from_container_env
from ketch.exception import AuthError, Error

if TYPE_CHECKING:
    import http.client

# File errors the server passes by name; everything else maps onto ketch.exception.
_BUILTIN = ("FileNotFoundError", "FileExistsError", "IsADirectoryError", "NotADirectoryError")
CHUNK = 2**20
# Query parameters: a dict, or (key, value) pairs where a key repeats.
Params = dict[str, Any] | list[tuple[str, Any]]


def _unix_connection(path: str) -> http.client.HTTPConnection:
    import http.client

    class UnixConnection(http.client.HTTPConnection):
        def connect(self) -> None:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.connect(path)
            self.sock = sock

    return UnixConnection("ketch", timeout=None, blocksize=CHUNK)


def _server() -> ServerInfo:
    info = from_container_env()
    if info is not None:
        return info
    from ketch.config import Config

    return ensure_server(Config.load())


def _connect() -> tuple[http.client.HTTPConnection, str]:
    import http.client  # here: importing it costs every container start a few ms

    info = _server()
    if info.host.startswith("unix:"):
        sock = Path(info.host.removeprefix("unix:")).parent / "api.sock"
        return _unix_connection(str(sock)), info.token
    conn = http.client.HTTPConnection(info.host, info.api_port, timeout=None, blocksize=CHUNK)
    return conn, info.token


def _url(path: str, params: Params | None) -> str:
    if not params:
        return urllib.parse.quote(path)
    pairs = params.items() if isinstance(params, dict) else params  # a list repeats keys
    flat = [(k, str(v).lower() if isinstance(v, bool) else str(v)) for k, v in pairs]
    return f"{urllib.parse.quote(path)}?{urllib.parse.urlencode(flat)}"


class Response:
    """An open answer; `chunks()` streams the body, `close()` ends the connection."""

    def __init__(self, conn: http.client.HTTPConnection, resp: http.client.HTTPResponse) -> None:
        self._conn = conn
        self.resp = resp
        self.status = resp.status

    def read_json(self) -> Any:
        data = self.resp.read()
        self.close()
        try:
            return json.loads(data)
        except ValueError:
            return data.decode(errors="replace")

    def read_chunk(self) -> bytes:
        return self.resp.read(CHUNK)

    def close(self) -> None:
        self._conn.close()


def _open(
    method: str,
    path: str,
    params: Params | None = None,
    body: bytes | IO[bytes] | Iterable[bytes] | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    conn, token = _connect()
    hdrs = {"Authorization": f"Bearer {token}", **(headers or {})}
    chunked = body is not None and not isinstance(body, bytes) and "Content-Length" not in hdrs
    try:
        conn.request(method, _url(path, params), body=body, headers=hdrs, encode_chunked=chunked)
        return Response(conn, conn.getresponse())
    except OSError as exc:
        conn.close()
        from ketch.exception import ConnectionError as KetchConnectionError

        raise KetchConnectionError(f"cannot reach the ketch server's API: {exc}") from exc
    except BaseException:
        conn.close()
        raise


def raise_for(status: int, body: Any) -> None:
    """Raise the error a failed answer describes."""
    if status < 400:
        return
    err = body.get("error") or body.get("detail") if isinstance(body, dict) else None
    if isinstance(err, dict) and "type" in err:
        name, message = str(err["type"]), str(err.get("message", ""))
        if name in _BUILTIN:
            raise getattr(builtins, name)(message)
        from ketch._client.deploy import error_from

        raise error_from(err)
    if status == 401:
        raise AuthError(str(err or body))
    raise Error(f"server answered {status}: {err or body}")


def call_sync(
    method: str,
    path: str,
    *,
    params: Params | None = None,
    json_body: Any = None,
    body: bytes | IO[bytes] | Iterable[bytes] | None = None,
    headers: dict[str, str] | None = None,
) -> Any:
    if json_body is not None:
        body = json.dumps(json_body).encode()
        headers = {"Content-Type": "application/json", **(headers or {})}
    resp = _open(method, path, params, body, headers)
    data = resp.read_json()
    raise_for(resp.status, data)
    return data


async def call(method: str, path: str, *, params: Params | None = None, json: Any = None) -> Any:
    return await asyncio.to_thread(call_sync, method, path, params=params, json_body=json)


async def send_bytes(method: str, path: str, params: dict[str, Any], data: bytes) -> Any:
    """A request whose body is `data` as it is (a sandbox's stdin, a file's bytes)."""
    headers = {"Content-Type": "application/octet-stream"}
    return await asyncio.to_thread(
        call_sync, method, path, params=params, body=data, headers=headers
    )


async def download(path: str, params: dict[str, Any]) -> AsyncIterator[bytes]:
    """The body of a GET, chunk by chunk as it arrives."""
    resp = await asyncio.to_thread(_open, "GET", path, params)
    try:
        if resp.status >= 400:
            raise_for(resp.status, await asyncio.to_thread(resp.read_json))
        while chunk := await asyncio.to_thread(resp.read_chunk):
            yield chunk
    finally:
        resp.close()


def upload_sync(
    vid: str, source: str | IO[bytes], remote: str, mode: int | None, force: bool
) -> None:
    """Stream one local file (a path, or an open binary file) into the volume."""
    params: dict[str, Any] = {"path": remote, "force": force}
    if mode is not None:
        params["mode"] = mode
    if isinstance(source, str):
        with open(source, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            call_sync(
                "PUT",
                f"/v1/volumes/{vid}/files",
                params=params,
                body=fh,
                headers={"Content-Length": str(size)},
            )
    else:
        call_sync("PUT", f"/v1/volumes/{vid}/files", params=params, body=source)
