"""The SDK's side of a process in a Sandbox: its output streams (read as produced), its
input, its exit; a file in the sandbox; a tunnel. Each talks to the server's sandbox routes
(`_server/api/sandboxes.py`) over the management API (`_client/volume_api`'s transport,
which works from client processes and from inside containers alike)."""

from __future__ import annotations

import asyncio
import codecs
import enum
import io
from collections.abc import AsyncIterator, Generator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from ketch._client import volume_api as api
from ketch._utils.aio import aio_method, iter_async, iter_sync
from ketch.exception import InvalidError

if TYPE_CHECKING:
    from ketch.sandbox import Sandbox

T = TypeVar("T", str, bytes)
# How long one read of a stream waits on the server for output (it answers sooner when
# there is some); a loop of these follows a stream for as long as it lasts.
_POLL = 20.0
_FILE_PIECE = 4 * 1024 * 1024


class StreamType(enum.Enum):
    """Where a process's stdout or stderr goes: PIPE (read it from the process) or DEVNULL."""

    PIPE = "pipe"
    DEVNULL = "devnull"
    STDOUT = "stdout"  # accepted for Modal's sake: read as PIPE


async def _get_bytes(path: str, params: dict[str, Any]) -> tuple[bytes, dict[str, str]]:
    def get() -> tuple[bytes, dict[str, str]]:
        resp = api._open("GET", path, params)
        try:
            if resp.status >= 400:
                api.raise_for(resp.status, resp.read_json())
            data = resp.resp.read()
            return data, {k.lower(): v for k, v in resp.resp.getheaders()}
        finally:
            resp.close()

    return await asyncio.to_thread(get)


class StreamReader(Generic[T]):
    """stdout or stderr of a process: `read()` all of it (waits for its end), or iterate
    its lines as they are produced. One reader per stream: what is read is gone."""

    def __init__(self, base: str, fd: int, text: bool) -> None:
        self._path = f"{base}/output/{fd}"
        self._fd = fd
        self._text = text
        self._offset = 0
        self._eof = False
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")

    @property
    def file_descriptor(self) -> int:
        return self._fd

    def _out(self, data: bytes, final: bool = False) -> T:
        if self._text:
            return self._decoder.decode(data, final)  # type: ignore[return-value]
        return data  # type: ignore[return-value]

    async def _chunk(self) -> bytes:
        """The next bytes the process wrote (b"" once the stream has ended)."""
        while not self._eof:
            params = {"offset": self._offset, "wait": _POLL}
            data, headers = await _get_bytes(self._path, params)
            self._offset += len(data)
            self._eof = headers.get("x-ketch-eof") == "1"
            if data:
                return data
        return b""

    async def _read(self) -> T:
        parts = []
        while chunk := await self._chunk():
            parts.append(chunk)
        return self._out(b"".join(parts), final=True)

    read = aio_method(_read)

    async def _lines(self) -> AsyncIterator[T]:
        pending = b""
        while chunk := await self._chunk():
            pending += chunk
            *whole, pending = pending.split(b"\n")
            for line in whole:
                yield self._out(line + b"\n")
        if pending:
            yield self._out(pending, final=True)

    def __iter__(self) -> Generator[T, None, None]:
        return iter_sync(self._lines())

    def __aiter__(self) -> AsyncIterator[T]:
        return iter_async(self._lines())


class StreamWriter:
    """stdin of a process: `write` queues, `drain` sends (and waits until the process's
    input has taken it), `write_eof` closes it after what was written."""

    def __init__(self, base: str) -> None:
        self._path = f"{base}/stdin"
        self._buffer = bytearray()
        self._eof = False
        self._closed = False

    def write(self, data: bytes | bytearray | memoryview | str) -> None:
        if self._eof or self._closed:
            raise ValueError("stdin is closed (write_eof was called)")
        if isinstance(data, str):
            data = data.encode()
        if not isinstance(data, bytes | bytearray | memoryview):
            raise TypeError(f"stdin takes bytes or str, not {type(data).__name__}")
        self._buffer += data

    def write_eof(self) -> None:
        self._eof = True

    async def _drain(self) -> None:
        if self._closed:
            return
        data, self._buffer = bytes(self._buffer), bytearray()
        if not data and not self._eof:
            return
        await api.send_bytes("POST", self._path, {"eof": self._eof}, data)
        self._closed = self._eof

    drain = aio_method(_drain)


class ContainerProcess(Generic[T]):
    """A process started by `Sandbox.exec` (or the sandbox's own command)."""

    def __init__(self, sandbox_id: str, pid: str, text: bool) -> None:
        self._sandbox_id = sandbox_id
        self._pid = pid
        self._base = f"/v1/sandboxes/{sandbox_id}/procs/{pid}"
        self._stdout: StreamReader[T] = StreamReader(self._base, 1, text)
        self._stderr: StreamReader[T] = StreamReader(self._base, 2, text)
        self._stdin = StreamWriter(self._base)
        self._returncode: int | None = None

    def __repr__(self) -> str:
        return f"ContainerProcess({self._pid!r} in {self._sandbox_id})"

    @property
    def stdout(self) -> StreamReader[T]:
        return self._stdout

    @property
    def stderr(self) -> StreamReader[T]:
        return self._stderr

    @property
    def stdin(self) -> StreamWriter:
        return self._stdin

    @property
    def returncode(self) -> int:
        """The exit code (-1: killed at its timeout); call `wait()` or `poll()` first."""
        if self._returncode is None:
            raise InvalidError(
                "the process's returncode is known after wait() (or a poll() that saw it end)"
            )
        return self._returncode

    async def _status(self, timeout: float) -> int | None:
        reply = await api.call("GET", f"{self._base}/wait", params={"timeout": timeout})
        code = reply.get("returncode")
        if code is not None:
            self._returncode = int(code)
        return self._returncode

    async def _poll(self) -> int | None:
        return self._returncode if self._returncode is not None else await self._status(0)

    async def _wait(self) -> int:
        while self._returncode is None:
            await self._status(_POLL)
        return self._returncode

    poll = aio_method(_poll)
    wait = aio_method(_wait)


@dataclass(frozen=True)
class Tunnel:
    """A port of a sandbox reachable from outside it: `url` (http, or https when the
    server's gateway has a TLS certificate and the port was asked for encrypted), and the
    socket addresses for other protocols."""

    host: str
    port: int
    encrypted: bool = False

    @property
    def url(self) -> str:
        return f"{'https' if self.encrypted else 'http'}://{self.host}:{self.port}"

    @property
    def tls_socket(self) -> tuple[str, int]:
        if not self.encrypted:
            raise InvalidError("this tunnel has no TLS (the server's gateway has no certificate)")
        return self.host, self.port

    @property
    def tcp_socket(self) -> tuple[str, int]:
        return self.host, self.port


class FileIO(Generic[T]):
    """A file in a sandbox, opened with `Sandbox.open(path, mode)`: `read`, `write`,
    `readline`, `seek`, `tell`, `flush`, `close`; a context manager. Writes are sent on
    `flush`/`close` (and when 4 MiB are waiting)."""

    def __init__(self, sandbox: Sandbox, path: str, mode: str, size: int) -> None:
        self._sb = sandbox
        self._path = path
        self._mode = mode
        self._text = "b" not in mode
        self._readable = mode[0] == "r" or "+" in mode
        self._writable = mode[0] in "wax" or "+" in mode
        self._pos = size if mode[0] == "a" else 0
        self._pending: list[tuple[int, bytes]] = []
        self._closed = False
        self._base = f"/v1/sandboxes/{sandbox.object_id}/fs"

    def _check(self, want: str) -> None:
        if self._closed:
            raise ValueError("I/O operation on closed file")
        if want == "r" and not self._readable:
            raise io.UnsupportedOperation(f"not readable (opened with mode {self._mode!r})")
        if want == "w" and not self._writable:
            raise io.UnsupportedOperation(f"not writable (opened with mode {self._mode!r})")

    def _decode(self, data: bytes) -> T:
        return data.decode() if self._text else data  # type: ignore[return-value]

    async def _read(self, n: int = -1) -> T:
        self._check("r")
        await self._flush()
        parts: list[bytes] = []
        want = n
        while want != 0:
            piece = _FILE_PIECE if want < 0 else min(want, _FILE_PIECE)
            params = {"path": self._path, "offset": self._pos, "length": piece}
            data, _ = await _get_bytes(f"{self._base}/read", params)
            parts.append(data)
            self._pos += len(data)
            want = want - len(data) if want > 0 else want
            if len(data) < piece:
                break
        return self._decode(b"".join(parts))

    async def _readline(self) -> T:
        self._check("r")
        await self._flush()
        params = {"path": self._path, "offset": self._pos, "length": _FILE_PIECE}
        data, _ = await _get_bytes(f"{self._base}/read", params)
        line = data[: data.index(b"\n") + 1] if b"\n" in data else data
        self._pos += len(line)
        return self._decode(line)

    async def _write(self, data: T) -> int:
        self._check("w")
        raw = data.encode() if isinstance(data, str) else bytes(data)
        if self._text and not isinstance(data, str):
            raise TypeError("write() of a file opened in text mode takes str")
        if not self._text and isinstance(data, str):
            raise TypeError("write() of a file opened in binary mode takes bytes")
        at = -1 if self._mode[0] == "a" else self._pos
        self._pending.append((at, raw))
        self._pos += len(raw)
        if sum(len(p) for _, p in self._pending) >= _FILE_PIECE:
            await self._flush()
        return len(data)

    async def _flush(self) -> None:
        pending, self._pending = self._pending, []
        for at, data in pending:
            for start in range(0, max(len(data), 1), _FILE_PIECE):
                piece = data[start : start + _FILE_PIECE]
                offset = at if at < 0 else at + start
                params = {"path": self._path, "offset": offset}
                await api.send_bytes("PUT", f"{self._base}/write", params, piece)

    def seek(self, offset: int, whence: int = 0) -> int:
        if self._closed:
            raise ValueError("I/O operation on closed file")
        if whence != 0:
            raise io.UnsupportedOperation("only absolute seeks (whence=0) are supported")
        self._pos = offset
        return self._pos

    def tell(self) -> int:
        return self._pos

    async def _close(self) -> None:
        if not self._closed:
            await self._flush()
            self._closed = True

    read = aio_method(_read)
    readline = aio_method(_readline)
    write = aio_method(_write)
    flush = aio_method(_flush)
    close = aio_method(_close)

    def __enter__(self) -> FileIO[T]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> FileIO[T]:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close.aio()
