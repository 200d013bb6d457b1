"""The first process of a Sandbox (SPEC X1-X2): it runs the sandbox's command and every
`exec`, relays their output and input, does the file operations, and forwards the
sandbox's exposed ports, all on the server's behalf.

It is run as a script (`python .../agent.py SOCKET`), not as a module of the ketch package:
importing ketch costs a plain start more than the rest of a sandbox's start, and nothing
here needs it. It uses the standard library and msgpack only, and speaks the call
protocol's framing (an 8-byte big-endian length, then a msgpack array of maps) over one
unix socket that the server listens on in a directory only this sandbox sees.

Everything it starts runs in the sandbox with the environment the server gives (never the
agent's own, which names the ketch runtime), each in a session of its own so that a kill
takes its children too. Output is sent as it is read, within a credit the server renews as
the reader consumes it: a process that writes faster than anyone reads blocks on its pipe,
as it would on a terminal, and nothing is dropped.
"""

from __future__ import annotations

import sys

# Run as a script, this directory is first on sys.path, where the runtime's other modules
# (web.py, loader.py...) would shadow what the standard library or msgpack import.
if sys.path and sys.path[0].endswith("_runtime"):
    del sys.path[0]

import asyncio
import contextlib
import errno
import os
import shutil
import signal
import stat as stat_mod
import struct
from typing import Any

import msgpack

_HEADER = struct.Struct(">Q")
_READ = 64 * 1024
# Bytes of output sent ahead of what the server has acknowledged, per stream.
CREDIT = 4 * 1024 * 1024
# The most bytes one file read answers with; larger reads are made of several.
MAX_READ = 4 * 1024 * 1024
_FS_ERRORS = (
    "FileNotFoundError",
    "FileExistsError",
    "IsADirectoryError",
    "NotADirectoryError",
    "PermissionError",
)


class Link:
    """The framed channel to the server."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.packer = msgpack.Packer()
        self.closed = False

    def send(self, msg: dict[str, Any]) -> None:
        if self.closed:
            return
        body = self.packer.pack(msg)
        self.writer.write(_HEADER.pack(len(body) + 1) + b"\x91" + body)

    async def drain(self) -> None:
        with contextlib.suppress(ConnectionError, RuntimeError):
            await self.writer.drain()

    async def recv(self) -> list[dict[str, Any]]:
        head = await self.reader.readexactly(_HEADER.size)
        (length,) = _HEADER.unpack(head)
        body = await self.reader.readexactly(length)
        batch = msgpack.unpackb(body, raw=False)
        return [m for m in batch if isinstance(m, dict)]


class Proc:
    """One process: the sandbox's command ("main") or an exec."""

    def __init__(self, agent: Agent, pid: str) -> None:
        self.agent = agent
        self.pid = pid
        self.proc: asyncio.subprocess.Process | None = None
        self.credit = {1: CREDIT, 2: CREDIT}
        self.more = {1: asyncio.Event(), 2: asyncio.Event()}
        self.stdin: Any = None  # a StreamWriter, or the pty's master fd (int)
        self.master: int | None = None
        self.timed_out = False

    async def start(self, msg: dict[str, Any]) -> None:
        argv = [str(a) for a in msg["argv"]]
        env = {str(k): str(v) for k, v in (msg.get("env") or {}).items()}
        cwd = msg.get("cwd") or "/"
        pty = bool(msg.get("pty"))
        streams: list[tuple[int, asyncio.StreamReader | None]] = []
        if pty:
            import pty as pty_mod

            master, slave = pty_mod.openpty()
            self.proc = await asyncio.create_subprocess_exec(
                *argv, stdin=slave, stdout=slave, stderr=slave, env=env, cwd=cwd,
                start_new_session=True,
            )  # fmt: skip
            os.close(slave)
            self.master = self.stdin = master
            streams.append((1, await _reader_of(master)))
        else:
            self.proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.PIPE,
                stdout=_pipe_or_null(msg.get("stdout", True)),
                stderr=_pipe_or_null(msg.get("stderr", True)),
                env=env,
                cwd=cwd,
                start_new_session=True,
            )  # fmt: skip
            self.stdin = self.proc.stdin
            streams += [(1, self.proc.stdout), (2, self.proc.stderr)]
        timeout = msg.get("timeout")
        if timeout:
            asyncio.get_running_loop().call_later(float(timeout), self._time_out)
        _spawn(self._run(streams))

    def _time_out(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.timed_out = True
            self.kill()

    def kill(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)

    async def _run(self, streams: list[tuple[int, asyncio.StreamReader | None]]) -> None:
        assert self.proc is not None
        pumps = [asyncio.ensure_future(self._pump(fd, s)) for fd, s in streams if s is not None]
        for fd in (1, 2):
            if fd not in {f for f, s in streams if s is not None}:
                self.agent.link.send({"t": "eof", "pid": self.pid, "fd": fd})
        code = await self.proc.wait()
        # A pty gives EOF only when every holder of the slave side is gone; the process's
        # children may keep it open, so its output is read for a moment more, then cut.
        if self.master is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.gather(*pumps), 0.5)
        else:
            await asyncio.gather(*pumps)
        if self.master is not None:
            with contextlib.suppress(OSError):
                os.close(self.master)
        # Killed by a signal: 128 + its number, as a shell reports it (asyncio: -number).
        code = 128 - code if code < 0 else code
        self.agent.link.send(
            {"t": "exit", "pid": self.pid, "code": code, "timed_out": self.timed_out}
        )
        self.agent.procs.pop(self.pid, None)

    async def _pump(self, fd: int, stream: asyncio.StreamReader) -> None:
        link = self.agent.link
        try:
            while True:
                while self.credit[fd] <= 0:
                    self.more[fd].clear()
                    await self.more[fd].wait()
                try:
                    data = await stream.read(min(_READ, self.credit[fd]))
                except OSError:  # a pty's master reads EIO once the slave side is gone
                    data = b""
                if not data:
                    break
                self.credit[fd] -= len(data)
                link.send({"t": "out", "pid": self.pid, "fd": fd, "data": data})
                await link.drain()
        finally:
            link.send({"t": "eof", "pid": self.pid, "fd": fd})

    def grant(self, fd: int, n: int) -> None:
        if fd in self.credit:
            self.credit[fd] += n
            self.more[fd].set()

    async def write(self, data: bytes, eof: bool) -> None:
        if self.stdin is None:
            raise BrokenPipeError("the process's input is closed")
        if isinstance(self.stdin, int):
            if data:
                await asyncio.to_thread(_write_all, self.stdin, data)
            if eof:
                await asyncio.to_thread(_write_all, self.stdin, b"\x04")
            return
        if data:
            self.stdin.write(data)
            await self.stdin.drain()
        if eof:
            self.stdin.close()
            self.stdin = None


def _pipe_or_null(wanted: object) -> int:
    return asyncio.subprocess.PIPE if wanted else asyncio.subprocess.DEVNULL


# Tasks are held here until they end: the loop keeps only weak references to them.
_TASKS: set[asyncio.Future[Any]] = set()


def _spawn(coro: Any) -> None:
    task = asyncio.ensure_future(coro)
    _TASKS.add(task)
    task.add_done_callback(_TASKS.discard)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


async def _reader_of(fd: int) -> asyncio.StreamReader:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=2**20)
    await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(os.dup(fd), "rb", 0)
    )
    return reader


class Agent:
    def __init__(self, link: Link) -> None:
        self.link = link
        self.procs: dict[str, Proc] = {}
        self.servers: list[asyncio.AbstractServer] = []

    async def serve(self) -> None:
        self.link.send({"t": "hello", "pid": os.getpid()})
        while True:
            try:
                batch = await self.link.recv()
            except (asyncio.IncompleteReadError, ConnectionError):
                return  # the server is gone: so is this sandbox
            for msg in batch:
                _spawn(self.handle(msg))

    async def handle(self, msg: dict[str, Any]) -> None:
        kind = msg.get("t")
        rid = msg.get("rid")
        try:
            if kind == "exec":
                await self._exec(msg)
            elif kind == "credit":
                proc = self.procs.get(msg["pid"])
                if proc is not None:
                    proc.grant(int(msg["fd"]), int(msg["n"]))
            elif kind == "stdin":
                proc = self.procs.get(msg["pid"])
                if proc is None:
                    raise ProcessLookupError(f"process {msg['pid']} has ended")
                await proc.write(msg.get("data") or b"", bool(msg.get("eof")))
                self.link.send({"t": "reply", "rid": rid, "ok": True})
            elif kind == "kill":
                proc = self.procs.get(msg["pid"])
                if proc is not None:
                    proc.kill()
            elif kind == "fs":
                result = await asyncio.to_thread(file_op, msg)
                self.link.send({"t": "reply", "rid": rid, "ok": True, **result})
            elif kind == "ports":
                await self._forward(msg["dir"], [int(p) for p in msg["ports"]])
                self.link.send({"t": "reply", "rid": rid, "ok": True})
        except Exception as exc:  # every failure is the caller's answer, not the agent's end
            if rid is not None:
                self.link.send({"t": "reply", "rid": rid, "ok": False, "error": _error(exc)})
            elif kind == "exec":
                self.link.send({"t": "started", "pid": msg.get("pid"), "error": _error(exc)})

    async def _exec(self, msg: dict[str, Any]) -> None:
        proc = Proc(self, str(msg["pid"]))
        self.procs[proc.pid] = proc
        try:
            await proc.start(msg)
        except BaseException:
            self.procs.pop(proc.pid, None)
            raise
        self.link.send({"t": "started", "pid": proc.pid, "error": None})

    async def _forward(self, directory: str, ports: list[int]) -> None:
        """A unix socket per exposed port, each connection relayed to that port on the
        sandbox's own loopback: the server's tunnel listener connects to these."""
        for port in ports:

            async def relay(
                reader: asyncio.StreamReader, writer: asyncio.StreamWriter, port: int = port
            ) -> None:
                try:
                    up_r, up_w = await asyncio.open_connection("127.0.0.1", port)
                except OSError:
                    writer.close()
                    return
                await asyncio.gather(relay_bytes(reader, up_w), relay_bytes(up_r, writer))

            path = os.path.join(directory, f"p{port}.sock")
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            self.servers.append(await asyncio.start_unix_server(relay, path))


async def relay_bytes(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
    """Copy until EOF, then pass the EOF on (a half-close: the other way may go on)."""
    try:
        while data := await src.read(_READ):
            dst.write(data)
            await dst.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        with contextlib.suppress(Exception):
            if dst.can_write_eof():
                dst.write_eof()
            else:
                dst.close()


def _error(exc: BaseException) -> dict[str, str]:
    name = type(exc).__name__
    if isinstance(exc, OSError) and name not in _FS_ERRORS:
        # By errno: these read as errors of their own kind in the SDK.
        name = {
            errno.ENOTEMPTY: "SandboxFilesystemDirectoryNotEmptyError",
            errno.EROFS: "PermissionError",
        }.get(exc.errno or 0, "OSError")
    text = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
    if isinstance(exc, OSError) and exc.filename:
        text = f"{text}: {exc.filename}"
    return {"type": name, "message": text}


def _stat(path: str) -> dict[str, Any]:
    info = os.lstat(path)
    if stat_mod.S_ISDIR(info.st_mode):
        kind = "directory"
    elif stat_mod.S_ISLNK(info.st_mode):
        kind = "symlink"
    else:
        kind = "file"
    return {"name": os.path.basename(path), "path": path, "type": kind, "size": info.st_size,
            "mtime": info.st_mtime, "mode": stat_mod.S_IMODE(info.st_mode)}  # fmt: skip


def file_op(msg: dict[str, Any]) -> dict[str, Any]:
    """One file operation, in the sandbox's own filesystem."""
    op, path = msg["op"], str(msg["path"])
    if op == "open":
        mode = str(msg["mode"])
        flags = {"r": os.O_RDONLY, "w": os.O_WRONLY | os.O_CREAT | os.O_TRUNC,
                 "a": os.O_WRONLY | os.O_CREAT | os.O_APPEND,
                 "x": os.O_WRONLY | os.O_CREAT | os.O_EXCL}[mode[0]]  # fmt: skip
        if "+" in mode:
            flags = (flags & ~os.O_WRONLY) | os.O_RDWR
        fd = os.open(path, flags, 0o644)
        try:
            info = os.fstat(fd)
            if stat_mod.S_ISDIR(info.st_mode):
                raise IsADirectoryError(21, "Is a directory", path)
            return {"size": info.st_size}
        finally:
            os.close(fd)
    if op == "read":
        length = min(int(msg.get("length", MAX_READ)), MAX_READ)
        with open(path, "rb") as fh:
            fh.seek(int(msg.get("offset", 0)))
            return {"data": fh.read(length)}
    if op == "write":
        data = bytes(msg.get("data") or b"")
        offset = int(msg.get("offset", -1))
        fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            os.lseek(fd, offset, os.SEEK_SET) if offset >= 0 else os.lseek(fd, 0, os.SEEK_END)
            _write_all(fd, data)
            if msg.get("truncate"):
                os.ftruncate(fd, os.lseek(fd, 0, os.SEEK_CUR))
        finally:
            os.close(fd)
        return {"n": len(data)}
    if op == "ls":
        names = sorted(os.listdir(path))
        return {"names": names, "entries": [_stat(os.path.join(path, n)) for n in names]}
    if op == "mkdir":
        if msg.get("parents"):
            os.makedirs(path, exist_ok=True)
        else:
            os.mkdir(path)
        return {}
    if op == "rm":
        if os.path.isdir(path) and not os.path.islink(path):
            if msg.get("recursive"):
                shutil.rmtree(path)
            else:
                os.rmdir(path)
        else:
            os.unlink(path)
        return {}
    if op == "stat":
        return _stat(path)
    raise ValueError(f"unknown file operation {op!r}")


async def _main(socket_path: str) -> None:
    reader, writer = await asyncio.open_unix_connection(socket_path, limit=2**20)
    agent = Agent(Link(reader, writer))
    await agent.serve()
    for proc in list(agent.procs.values()):
        proc.kill()


if __name__ == "__main__":
    # Children that exit are reaped by asyncio; the sandbox's pid 1 (bwrap's) reaps the rest.
    asyncio.run(_main(sys.argv[1]))
