"""`ketch.Sandbox` (SPEC X1-X3): a container for code you do not trust, with processes you
start in it, its files, and its ports, as Modal's `modal.Sandbox`.

    app = ketch.App.lookup("sandboxes", create_if_missing=True)
    sb = ketch.Sandbox.create(app=app, image=ketch.Image.debian_slim().pip_install("numpy"))
    p = sb.exec("python", "-c", "print(6 * 7)")
    print(p.stdout.read())   # "42\\n"
    sb.terminate()

It is isolated as a function's container is (bubblewrap; no capabilities; the server's
state out of sight) and more: it gets no credential and cannot call the server; its network
is a namespace of its own (or none, with `block_network=True`), reached from outside only
through the tunnels of the ports it exposes. It ends when its command exits, at
`terminate()`, at its `timeout` (default 300 s) or `idle_timeout`, or with the server.
"""

from __future__ import annotations

import builtins
import json
import os
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ketch._client import volume_api as api
from ketch._sandbox_io import (
    ContainerProcess,
    FileIO,
    StreamReader,
    StreamType,
    StreamWriter,
    Tunnel,
)
from ketch._utils.aio import Aio, AioIter, aio_method
from ketch.exception import (
    InvalidError,
    NotFoundError,
    SandboxTerminatedError,
    SandboxTimeoutError,
)

if TYPE_CHECKING:
    from ketch.app import App
    from ketch.image import Image
    from ketch.secret import Secret
    from ketch.volume import Volume

__all__ = [
    "ContainerProcess",
    "FileIO",
    "Sandbox",
    "StreamReader",
    "StreamType",
    "StreamWriter",
    "Tunnel",
]

_BASE = "/v1/sandboxes"
_WAIT = 55.0
_UNSUPPORTED = ("cloud", "region", "network_file_systems", "proxy", "custom_domain")


def _environment(environment_name: str | None) -> str:
    if environment_name:
        return environment_name
    inside = os.environ.get("KETCH_ENVIRONMENT")
    if inside:
        return inside
    from ketch.config import Config

    return Config.load().environment


class Sandbox:
    """A running (or ended) sandbox; made by `create`, found by `from_id`/`from_name`/`list`."""

    def __init__(self, info: dict[str, Any]) -> None:
        self._info = info
        self._id: str = info["sandbox_id"]
        main = f"{_BASE}/{self._id}/procs/main"
        self._stdout: StreamReader[str] = StreamReader(main, 1, True)
        self._stderr: StreamReader[str] = StreamReader(main, 2, True)
        self._stdin = StreamWriter(main)

    def __repr__(self) -> str:
        return f"Sandbox({self._id!r})"

    @property
    def object_id(self) -> str:
        return self._id

    @property
    def returncode(self) -> int | None:
        """The exit code once it has ended (124: timed out; 137: terminated), else None."""
        code = self._info.get("returncode")
        return None if code is None else int(code)

    @property
    def stdout(self) -> StreamReader[str]:
        return self._stdout

    @property
    def stderr(self) -> StreamReader[str]:
        return self._stderr

    @property
    def stdin(self) -> StreamWriter:
        return self._stdin

    # -- making and finding -----------------------------------------------------------
    @staticmethod
    async def _create(
        *args: str,
        app: App | None = None,
        name: str | None = None,
        tags: Mapping[str, str] | None = None,
        image: Image | None = None,
        env: Mapping[str, str | None] | None = None,
        secrets: Sequence[Secret] = (),
        volumes: Mapping[str, Volume] | None = None,
        timeout: int = 300,
        idle_timeout: int | None = None,
        workdir: str | None = None,
        gpu: str | None = None,
        cpu: float | tuple[float, float] | None = None,
        memory: int | tuple[int, int] | None = None,
        block_network: bool = False,
        encrypted_ports: Sequence[int] = (),
        unencrypted_ports: Sequence[int] = (),
        h2_ports: Sequence[int] = (),
        pty: bool = False,
        verbose: bool = False,
        environment_name: str | None = None,
        **unsupported: Any,
    ) -> Sandbox:
        for key in unsupported:
            if key in _UNSUPPORTED:
                raise InvalidError(f"Sandbox.create({key}=...) is not supported by ketch")
            raise TypeError(f"Sandbox.create() got an unexpected keyword argument {key!r}")
        body = _create_body(
            args, app, name, tags, image, env, secrets, volumes, timeout, idle_timeout,
            workdir, gpu, cpu, memory, block_network,
            [*encrypted_ports, *h2_ports], unencrypted_ports, pty,
        )  # fmt: skip
        info = await _stream_create(body, verbose)
        return Sandbox(info)

    create = Aio(_create, "create")

    @staticmethod
    async def _from_id(sandbox_id: str) -> Sandbox:
        if not isinstance(sandbox_id, str) or not sandbox_id.startswith("sb-"):
            raise InvalidError(f"{sandbox_id!r} is not a sandbox id (they start with 'sb-')")
        return Sandbox(await api.call("GET", f"{_BASE}/{sandbox_id}"))

    from_id = Aio(_from_id, "from_id")

    @staticmethod
    async def _from_name(
        app_name: str, name: str, *, environment_name: str | None = None
    ) -> Sandbox:
        params = {"environment": _environment(environment_name)}
        return Sandbox(await api.call("GET", f"{_BASE}/by-name/{app_name}/{name}", params=params))

    from_name = Aio(_from_name, "from_name")

    @staticmethod
    async def _list(
        *,
        app_id: str | None = None,
        tags: Mapping[str, str] | None = None,
        environment_name: str | None = None,
    ) -> AsyncIterator[Sandbox]:
        """The running sandboxes of the environment (of one app, with at least `tags`)."""
        params: list[tuple[str, str]] = [("environment", _environment(environment_name))]
        if app_id is not None:
            params.append(("app_id", app_id))
        params += [("tag", f"{k}={v}") for k, v in (tags or {}).items()]
        reply = await api.call("GET", _BASE, params=params)
        for info in reply["sandboxes"]:
            yield Sandbox(info)

    list = AioIter(_list, "list")

    async def _hydrate(self) -> Sandbox:
        self._info = await api.call("GET", f"{_BASE}/{self._id}")
        return self

    hydrate = aio_method(_hydrate)

    # -- life -------------------------------------------------------------------------
    async def _wait(self, raise_on_termination: bool = True) -> None:
        """Until it has ended; raises SandboxTimeoutError if it timed out, and
        SandboxTerminatedError if it was terminated (unless `raise_on_termination=False`)."""
        while self._info.get("state") != "ended":
            self._info = await api.call(
                "GET", f"{_BASE}/{self._id}/wait", params={"timeout": _WAIT}
            )
        result = self._info.get("result")
        if result == "timeout":
            raise SandboxTimeoutError(f"sandbox {self._id}: {self._info.get('error')}")
        if result == "terminated" and raise_on_termination:
            raise SandboxTerminatedError(f"sandbox {self._id} was terminated")

    async def _poll(self) -> int | None:
        """None while it runs, else its exit code."""
        await self._hydrate()
        return self.returncode if self._info.get("state") == "ended" else None

    async def _terminate(self, *, wait: bool = False) -> int | None:
        self._info = await api.call("POST", f"{_BASE}/{self._id}/terminate")
        if wait:
            await self._wait(raise_on_termination=False)
            return self.returncode
        return None

    async def _detach(self) -> None:
        """Nothing to let go of: every request is a connection of its own."""

    async def _reload_volumes(self, *, timeout: int = 55) -> None:
        """Nothing to fetch: a volume in a sandbox is the volume's live directory, so what
        others commit is there at once (and what the sandbox writes, for them)."""

    wait = aio_method(_wait)
    poll = aio_method(_poll)
    reload_volumes = aio_method(_reload_volumes)
    terminate = aio_method(_terminate)
    detach = aio_method(_detach)

    async def _get_tags(self) -> dict[str, str]:
        await self._hydrate()
        return dict(self._info.get("tags") or {})

    async def _set_tags(self, tags: Mapping[str, str]) -> None:
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in tags.items()):
            raise InvalidError("sandbox tags are str -> str")
        self._info = await api.call("PUT", f"{_BASE}/{self._id}/tags", json={"tags": dict(tags)})

    get_tags = aio_method(_get_tags)
    set_tags = aio_method(_set_tags)

    async def _tunnels(self, timeout: int = 50) -> dict[int, Tunnel]:
        reply = await api.call("GET", f"{_BASE}/{self._id}/tunnels")
        return {
            int(port): Tunnel(t["host"], int(t["port"]), bool(t["encrypted"]))
            for port, t in reply["tunnels"].items()
        }

    tunnels = aio_method(_tunnels)

    # -- processes --------------------------------------------------------------------
    async def _exec(
        self, /, *args: str, text: bool = True, **options: Any
    ) -> ContainerProcess[Any]:
        """Start `args` in the sandbox: options `workdir=`, `env=`, `secrets=`, `timeout=`
        (seconds; the process is killed then and its returncode is -1), `pty=`, and
        `stdout=`/`stderr=` (`StreamType.DEVNULL` to discard one)."""
        body = _exec_body(args, options)
        reply = await api.call("POST", f"{_BASE}/{self._id}/exec", json=body)
        return ContainerProcess(self._id, reply["pid"], text)

    exec = aio_method(_exec)

    # -- files ------------------------------------------------------------------------
    async def _open(self, path: str, mode: str = "r") -> FileIO[Any]:
        if mode.replace("b", "").replace("+", "") not in ("r", "w", "a", "x"):
            raise InvalidError(f"invalid file mode {mode!r}")
        reply = await self._fs("open", path, mode=mode)
        return FileIO(self, path, mode, int(reply.get("size", 0)))

    async def _ls(self, path: str) -> builtins.list[str]:
        return builtins.list((await self._fs("ls", path))["names"])

    async def _mkdir(self, path: str, parents: bool = False) -> None:
        await self._fs("mkdir", path, parents=parents)

    async def _rm(self, path: str, recursive: bool = False) -> None:
        await self._fs("rm", path, recursive=recursive)

    async def _fs(self, op: str, path: str, **fields: Any) -> dict[str, Any]:
        if not isinstance(path, str) or not path.startswith("/"):
            raise InvalidError(f"sandbox paths are absolute, not {path!r}")
        result: dict[str, Any] = await api.call(
            "POST", f"{_BASE}/{self._id}/fs", json={"op": op, "path": path, **fields}
        )
        return result

    open = aio_method(_open)
    ls = aio_method(_ls)
    mkdir = aio_method(_mkdir)
    rm = aio_method(_rm)

    @property
    def filesystem(self) -> SandboxFilesystem:
        """Whole-file operations (Modal's `Sandbox.filesystem`)."""
        from ketch._sandbox_fs import SandboxFilesystem

        return SandboxFilesystem(self)


if TYPE_CHECKING:
    from ketch._sandbox_fs import SandboxFilesystem


def _current_app_id(app: App | None) -> str:
    if app is not None:
        app_id = app.app_id
        if app_id is None:
            raise InvalidError(
                "Sandbox.create(app=...): the app is not running; use "
                "ketch.App.lookup(name, create_if_missing=True), or create it inside "
                "`with app.run():`"
            )
        return app_id
    inside = os.environ.get("KETCH_APP_ID")
    if inside:
        return inside
    raise InvalidError(
        "Sandbox.create needs app= outside a ketch container: "
        "app = ketch.App.lookup('my-app', create_if_missing=True)"
    )


def _limit(value: Any, what: str) -> Any:
    # (request, limit): ketch enforces the limit.
    if isinstance(value, tuple):
        if len(value) != 2:
            raise InvalidError(f"{what}= takes a number or a (request, limit) pair")
        return value[1]
    return value


def _create_body(
    args: Sequence[str], app: App | None, name: str | None, tags: Mapping[str, str] | None,
    image: Image | None, env: Mapping[str, str | None] | None, secrets: Sequence[Secret],
    volumes: Mapping[str, Volume] | None, timeout: int, idle_timeout: int | None,
    workdir: str | None, gpu: str | None, cpu: Any, memory: Any, block_network: bool,
    encrypted_ports: Sequence[int], unencrypted_ports: Sequence[int], pty: bool,
) -> dict[str, Any]:  # fmt: skip
    from ketch._client.deploy import force_build_requested
    from ketch.image import Image
    from ketch.volume import volume_mounts

    _check_args(args)
    body: dict[str, Any] = {
        "app_id": _current_app_id(app),
        "args": builtins.list(args),
        "name": name,
        "tags": dict(tags or {}),
        "image": (image or Image.debian_slim()).spec(),
        "env": {k: v for k, v in (env or {}).items() if v is not None},
        "secrets": [s.spec() for s in secrets],
        "volumes": volume_mounts("Sandbox.create", {}, volumes or {}),
        "timeout": timeout,
        "idle_timeout": idle_timeout,
        "workdir": workdir,
        "gpu": gpu,
        "cpu": None if cpu is None else float(_limit(cpu, "cpu")),
        "memory": _limit(memory, "memory"),
        "block_network": block_network,
        "encrypted_ports": builtins.list(encrypted_ports),
        "unencrypted_ports": builtins.list(unencrypted_ports),
        "pty": pty,
        "force_build": force_build_requested(),
    }
    if workdir is not None and not workdir.startswith("/"):
        raise InvalidError(f"workdir must be an absolute path, not {workdir!r}")
    return body


def _check_args(args: Sequence[str]) -> None:
    for arg in args:
        if not isinstance(arg, str):
            raise InvalidError(f"sandbox commands are strings; got {type(arg).__name__}: {arg!r}")


def _exec_body(args: Sequence[str], options: dict[str, Any]) -> dict[str, Any]:
    if not args:
        raise InvalidError("Sandbox.exec needs a command")
    _check_args(args)
    known = {"workdir", "env", "secrets", "timeout", "pty", "stdout", "stderr", "bufsize"}
    for key in options:
        if key not in known:
            raise TypeError(f"Sandbox.exec() got an unexpected keyword argument {key!r}")
    workdir = options.get("workdir")
    if workdir is not None and not str(workdir).startswith("/"):
        raise InvalidError(f"workdir must be an absolute path, not {workdir!r}")

    return {
        "args": builtins.list(args),
        "workdir": workdir,
        "env": {k: v for k, v in (options.get("env") or {}).items() if v is not None},
        "secrets": [s.spec() for s in options.get("secrets") or ()],
        "timeout": options.get("timeout"),
        "pty": bool(options.get("pty", False)),
        "stdout": options.get("stdout", StreamType.PIPE) != StreamType.DEVNULL,
        "stderr": options.get("stderr", StreamType.PIPE) != StreamType.DEVNULL,
    }


async def _stream_create(body: dict[str, Any], verbose: bool) -> dict[str, Any]:
    """POST the create; its build log lines go to stderr when `verbose` (or
    `ketch.enable_output()`), and its last line is the sandbox or the error."""
    import asyncio
    import sys

    from ketch._client.deploy import error_from
    from ketch._output import deploy_log

    show = verbose or deploy_log() is not None

    def run() -> dict[str, Any]:
        data = json.dumps(body).encode()
        headers = {"Content-Type": "application/json"}
        resp = api._open("POST", _BASE, None, data, headers)
        try:
            if resp.status >= 400:
                api.raise_for(resp.status, resp.read_json())
            while line := resp.resp.readline():
                if not line.strip():
                    continue
                item = json.loads(line)
                if "log" in item and show:
                    print(item["log"], file=sys.stderr)
                elif "result" in item:
                    result: dict[str, Any] = item["result"]
                    return result
                elif "error" in item:
                    raise error_from(item["error"])
        finally:
            resp.close()
        raise NotFoundError("the server ended the sandbox's creation without an answer")

    return await asyncio.to_thread(run)
