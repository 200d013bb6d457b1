"""Large arguments and results: BlobCreate / BlobGet, and the HTTP URLs they hand out.

Modal's client uploads anything over its size limit (2 MiB by default) with an HTTP PUT to
the URL BlobCreate returns and checks the answer's ETag (the MD5 of the body, quoted, as
S3 gives it); readers GET the URL BlobGet returns. This is a small HTTP/1.1 server of its
own on the front end's host (containers reach it as the host's loopback), one file per
blob under the state directory. URLs carry an unguessable token per blob."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import secrets
from pathlib import Path
from typing import TYPE_CHECKING, Any

from grpclib.const import Status
from grpclib.exceptions import GRPCError

from ketch._modal_wire.servicer import Ctx, Handlers
from ketch._modal_wire.state import new_id

if TYPE_CHECKING:
    from ketch._modal_wire.core import Wire

_MAX_BLOB = 2 * 1024**3
_MAX_HEAD = 64 * 1024


class BlobStore:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.tokens: dict[str, str] = {}  # blob id -> URL token
        self.expected: dict[str, int] = {}  # blob id -> content length announced
        self.base_url = ""
        self._server: asyncio.Server | None = None

    def path(self, blob_id: str) -> Path:
        return self.directory / blob_id

    async def start(self, host: str) -> None:
        self._server = await asyncio.start_server(self._handle, host, 0, limit=_MAX_HEAD)
        port = self._server.sockets[0].getsockname()[1]
        self.base_url = f"http://{host}:{port}"

    def close(self) -> None:
        if self._server is not None:
            self._server.close()

    def url(self, blob_id: str) -> str:
        return f"{self.base_url}/blob/{blob_id}/{self.tokens[blob_id]}"

    def create(self, length: int) -> str:
        if not 0 <= length <= _MAX_BLOB:
            raise GRPCError(Status.INVALID_ARGUMENT, f"blob of {length} bytes is too large")
        blob_id = new_id("bl")
        self.tokens[blob_id] = secrets.token_urlsafe(16)
        self.expected[blob_id] = length
        return blob_id

    def _target(self, target: str) -> str | None:
        parts = target.split("/")
        if len(parts) != 4 or parts[1] != "blob":
            return None
        blob_id, token = parts[2], parts[3]
        known = self.tokens.get(blob_id)
        if known is None or not secrets.compare_digest(known, token):
            return None
        return blob_id

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while await self._one(reader, writer):
                pass
        except (ConnectionError, asyncio.IncompleteReadError, ValueError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        method, target, _ = lines[0].split(" ", 2)
        headers = {}
        for line in lines[1:]:
            if ":" in line:
                name, value = line.split(":", 1)
                headers[name.strip().lower()] = value.strip()
        body = await _read_body(reader, headers)
        blob_id = self._target(target)
        if blob_id is None:
            await _answer(writer, 404, b"no such blob")
        elif method == "PUT":
            if len(body) != self.expected.get(blob_id, -1):
                await _answer(writer, 400, b"length differs from BlobCreate's")
                return False
            await asyncio.to_thread(self.path(blob_id).write_bytes, body)
            etag = hashlib.md5(body, usedforsecurity=False).hexdigest()
            await _answer(writer, 200, b"", {"ETag": f'"{etag}"'})
        elif method == "GET" and self.path(blob_id).is_file():
            data = await asyncio.to_thread(self.path(blob_id).read_bytes)
            await _answer(writer, 200, data, {"Content-Type": "application/octet-stream"})
        else:
            await _answer(writer, 404, b"no such blob")
        return headers.get("connection", "").lower() != "close"


async def _read_body(reader: asyncio.StreamReader, headers: dict[str, str]) -> bytes:
    if headers.get("transfer-encoding", "").lower() == "chunked":
        chunks: list[bytes] = []
        total = 0
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0].strip(), 16)
            total += size
            if total > _MAX_BLOB:
                raise ValueError("blob too large")
            chunk = await reader.readexactly(size + 2)
            if size == 0:
                return b"".join(chunks)
            chunks.append(chunk[:-2])
    length = int(headers.get("content-length", "0"))
    if not 0 <= length <= _MAX_BLOB:
        raise ValueError("blob too large")
    return await reader.readexactly(length)


async def _answer(
    writer: asyncio.StreamWriter, status: int, body: bytes, extra: dict[str, str] | None = None
) -> None:
    reason = {200: "OK", 400: "Bad Request", 404: "Not Found"}[status]
    lines = [f"HTTP/1.1 {status} {reason}", f"Content-Length: {len(body)}"]
    lines += [f"{k}: {v}" for k, v in (extra or {}).items()]
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
    await writer.drain()


def register(wire: Wire, handlers: Handlers) -> None:
    pb2 = wire.pb2

    async def blob_create(req: Any, ctx: Ctx) -> Any:
        blob_id = wire.large_blobs.create(req.content_length)
        url = wire.large_blobs.url(blob_id)
        response = pb2.BlobCreateResponse(blob_id=blob_id, upload_url=url)
        response.blob_ids.append(blob_id)
        response.upload_urls.items.append(url)
        return response

    async def blob_get(req: Any, ctx: Ctx) -> Any:
        store = wire.large_blobs
        if req.blob_id not in store.tokens or not store.path(req.blob_id).is_file():
            raise GRPCError(Status.NOT_FOUND, f"blob {req.blob_id!r} not found")
        return pb2.BlobGetResponse(download_url=store.url(req.blob_id))

    handlers.unary.update(BlobCreate=blob_create, BlobGet=blob_get)
