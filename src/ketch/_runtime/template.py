"""A fork-server template: loads one function once, then forks its containers.

`python -m ketch._runtime.template` is started by the local backend
(`_backends/forkserver.py`) in the function's image environment, with a control socket
(AF_UNIX, SOCK_SEQPACKET, one JSON message per packet) on the descriptor named by
KETCH_TEMPLATE_FD. It imports the runtime, the web stack for a web function, and the user's
module (and runs `@enter(snap=True)` hooks when the class asked for memory snapshots), then
forks a container for each request. The child becomes a container exactly as a plain start
would be one: it connects to the server itself, says hello with its own id and goes on with
the code already in memory.

Forking is only safe in a process with one thread and no running event loop, so the
template checks that right after loading and again before every fork; when it does not
hold (the user's import started a thread) the template says why and leaves, and the backend
starts plain processes instead. The template holds no connection to the server.

Messages in (from the backend): `load` (first, once), `fork` (with the child's stdout and
stderr pipes attached as SCM_RIGHTS), `retire`. Out: `ready` | `failed` | `unsafe`, then
per fork `forked` (the child's pid) or `refused`, and `exit` with each child's exit code
(the template is the children's parent, so it reaps them and reports).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import gc
import inspect
import json
import os
import select
import signal
import socket
import sys
import threading
import traceback
from collections.abc import Mapping
from typing import Any, NoReturn

from ketch._runtime.loader import Preloaded, Target, add_sys_path
from ketch._utils.protocol import fork as fp
from ketch._utils.protocol.container import ContainerFunction, ContainerWeb

MAX_MESSAGE = 1 << 20


def send(sock: socket.socket, msg: Mapping[str, Any], fds: list[int] | None = None) -> None:
    data = json.dumps(msg).encode()
    if fds:
        socket.send_fds(sock, [data], fds)
    else:
        sock.send(data)


def fork_hazard() -> str | None:
    """Why forking this process now would be unsafe, or None. A thread other than this one
    may hold a lock (the allocator's, a logging handler's) that the child would inherit
    held forever; a running event loop's state would be shared with the child."""
    if threading.active_count() > 1:
        names = ", ".join(
            sorted(t.name for t in threading.enumerate() if t is not threading.current_thread())
        )
        return f"{threading.active_count() - 1} other thread(s) running ({names})"
    with contextlib.suppress(OSError):
        # Threads started by C code (a BLAS pool, a native client) are not in `threading`.
        native = len(os.listdir("/proc/self/task"))
        if native > 1:
            return f"{native - 1} native thread(s) running besides the main one"
    with contextlib.suppress(RuntimeError):
        asyncio.get_running_loop()
        return "an event loop is running"
    return None


def _warm_web_stack(web: ContainerWeb) -> None:
    """Import what serving the web function will import, so that the children need not:
    FastAPI and uvicorn, the protocol classes uvicorn picks when it loads its config, and
    the first app's lazy imports (pydantic models, Starlette middleware). Builds throwaway
    objects only; nothing listens and no loop runs."""
    from ketch._runtime import web as webmod

    kind = web.type
    if kind == "web_server":
        return  # the user's own server: the runtime only pipes bytes to it
    import uvicorn  # noqa: F401

    def probe(x: int = 0) -> dict[str, int]:
        return {"x": x}

    if kind == "fastapi":
        webmod.build_app(probe, dataclasses.replace(web, docs=False), 1)
        with contextlib.suppress(ImportError):
            import anyio._backends._asyncio  # sync handlers run through anyio
            import anyio.to_thread  # noqa: F401
    elif kind == "wsgi":
        with contextlib.suppress(ImportError):
            import a2wsgi  # noqa: F401
    server = webmod.WebServer(probe, "", lifespan=kind == "asgi")
    server.server.config.load()


def load(msg: fp.Load) -> Preloaded:
    """Everything a container does before it needs its own server connection."""
    spec = ContainerFunction.from_wire(msg["function"])
    add_sys_path(msg["sys_path"])
    web = spec.web
    extra = msg["web_runtime"]  # given to containers of apps with endpoints only
    if extra and extra not in sys.path:
        sys.path.append(extra)  # after the image's packages, as the runtime does
    if web is not None:
        _warm_web_stack(web)
    from ketch.compat.shim import install_modal_alias

    install_modal_alias()
    import ketch._runtime.entry  # what every child runs

    if spec.batched:
        with contextlib.suppress(ImportError):
            import ketch._runtime.batch  # noqa: F401
    snapshot = msg["snapshot"]
    given = msg["params"]
    params = base64.b64decode(given) if given else None
    # Without a snapshot the class is instantiated in each container, with its parameters,
    # as in a plain start: one template then serves every parameter set.
    target = Target(spec, params, instantiate=snapshot)
    if snapshot:
        for hook in target.enter(snap=True):
            result = hook()
            if inspect.isawaitable(result):
                _run_once(result)
    return Preloaded(target=target, params=params, snapped=snapshot)


def _run_once(awaitable: Any) -> None:
    """An async snap hook, on a loop of its own that is closed before any fork."""
    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(awaitable)
        loop.run_until_complete(loop.shutdown_default_executor())
    finally:
        loop.close()
        asyncio.set_event_loop(None)


class Template:
    def __init__(self, sock: socket.socket, loaded: Preloaded) -> None:
        self.sock = sock
        self.loaded = loaded
        self.children: set[int] = set()
        self.retiring = False
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_r, False)
        os.set_blocking(self.wake_w, False)

    def serve(self) -> NoReturn:
        # SIGCHLD writes a byte to the wake-up pipe, which ends the poll below.
        signal.set_wakeup_fd(self.wake_w, warn_on_full_buffer=False)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        poller = select.poll()
        poller.register(self.sock.fileno(), select.POLLIN)
        poller.register(self.wake_r, select.POLLIN)
        while True:
            for fd, _ in poller.poll(1000):
                if fd == self.wake_r:
                    with contextlib.suppress(BlockingIOError):
                        os.read(self.wake_r, 4096)
                elif not self._on_message():
                    # The server closed its end or died. Children live on: each has its own
                    # connection and leaves when the server does.
                    os._exit(0)
            self._reap()
            if self.retiring and not self.children:
                os._exit(0)

    def _on_message(self) -> bool:
        try:
            data, fds, _flags, _addr = socket.recv_fds(self.sock, MAX_MESSAGE, 4)
        except (BlockingIOError, InterruptedError):
            return True
        if not data:
            for fd in fds:
                os.close(fd)
            return False
        msg = json.loads(data)
        if msg["t"] == fp.FORK:
            self._fork(msg, fds)
        else:
            for fd in fds:
                os.close(fd)
            if msg["t"] == fp.RETIRE:
                self.retiring = True
        return True

    def _reap(self) -> None:
        for pid in list(self.children):
            code: int | None = None
            try:
                done, status = os.waitpid(pid, os.WNOHANG)
                if done:
                    code = os.waitstatus_to_exitcode(status)
            except ChildProcessError:  # reaped elsewhere: gone, with its code unknown
                done = pid
            if done:
                self.children.discard(pid)
                with contextlib.suppress(OSError):
                    gone: fp.Exit = {"t": fp.EXIT, "pid": pid, "code": code}
                    send(self.sock, gone)

    def _fork(self, msg: fp.Fork, fds: list[int]) -> None:
        why = "the fork request came without its output pipes" if len(fds) != 2 else None
        why = why or ("this template is retiring" if self.retiring else None) or fork_hazard()
        if why is not None:
            for fd in fds:
                os.close(fd)
            refused: fp.Refused = {"t": fp.REFUSED, "cid": msg["cid"], "why": why}
            send(self.sock, refused)
            return
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            self._child(msg, fds)
        # Both sides set the group, so that it exists before the backend may signal it.
        with contextlib.suppress(OSError):
            os.setpgid(pid, pid)
        for fd in fds:
            os.close(fd)
        self.children.add(pid)
        forked: fp.Forked = {"t": fp.FORKED, "cid": msg["cid"], "pid": pid}
        send(self.sock, forked)

    def _child(self, msg: fp.Fork, fds: list[int]) -> NoReturn:
        code = 1
        try:
            os.setpgid(0, 0)
            signal.set_wakeup_fd(-1)
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            self.sock.close()
            os.close(self.wake_r)
            os.close(self.wake_w)
            out, err = fds
            devnull = os.open(os.devnull, os.O_RDONLY)
            os.dup2(devnull, 0)
            os.dup2(out, 1)
            os.dup2(err, 2)
            for fd in (devnull, out, err):
                os.close(fd)
            os.environ.clear()
            os.environ.update(msg["env"])
            os.chdir(msg["cwd"])
            reseed()
            from ketch._runtime.entry import run_forked

            code = run_forked(self.loaded)
        except BaseException:
            with contextlib.suppress(Exception):
                traceback.print_exc()
        finally:
            with contextlib.suppress(Exception):
                sys.stdout.flush()
                sys.stderr.flush()
            os._exit(code)


def reseed() -> None:
    """Random state a forked child must not share with its siblings. `random` reseeds
    itself at fork (os.register_at_fork); numpy's global generator does not."""
    np = sys.modules.get("numpy")
    if np is not None:
        with contextlib.suppress(Exception):
            np.random.seed()


def main() -> NoReturn:
    sock = socket.socket(fileno=int(os.environ.pop("KETCH_TEMPLATE_FD")))
    sock.setblocking(True)
    data = sock.recv(MAX_MESSAGE)
    if not data:
        os._exit(0)
    try:
        loaded = load(json.loads(data))
    except BaseException as exc:
        # A plain start of the same code fails the same way, and reports it properly (R5).
        traceback.print_exc()
        with contextlib.suppress(OSError):
            failed: fp.Failed = {"t": fp.FAILED, "error": f"{type(exc).__name__}: {exc}"}
            send(sock, failed)
        os._exit(1)
    why = fork_hazard()
    if why is not None:
        with contextlib.suppress(OSError):
            unsafe: fp.Unsafe = {"t": fp.UNSAFE, "why": why}
            send(sock, unsafe)
        os._exit(0)
    # Objects that exist now are shared with every child; keep the collector from touching
    # (and so copying) their pages.
    gc.collect()
    gc.freeze()
    sys.stdout.flush()
    sys.stderr.flush()
    ready: fp.Ready = {"t": fp.READY, "pid": os.getpid()}
    send(sock, ready)
    Template(sock, loaded).serve()


if __name__ == "__main__":
    main()
