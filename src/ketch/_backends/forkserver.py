"""The fork server, server side: template processes that have loaded a function, asked to
fork its containers (docs/architecture.md, "Fork server"; the template is
_runtime/template.py).

A template exists per function at one app version, image environment and secret values
(and per parameter set when `enable_memory_snapshot` has it build the instance). It is not a
container: the scheduler never sees it. A forked container is the template's child, not the
server's: the template reaps it and reports its exit code, and a pidfd tells the server of
the exit even when the template has gone. Its stdout and stderr are pipes the server made
and passed over the control socket, so its logs are captured like a plain container's.

Where forking is not safe or not simple a plain process starts instead, and the container's
log says why once per function: network and mount namespaces (web_server, block_network,
volumes; os.unshare needs Python 3.12), cgroup or rlimit limits (applied as the process
starts), GPUs, a template whose import started threads or failed.
"""

from __future__ import annotations

import array
import asyncio
import collections
import contextlib
import hashlib
import json
import os
import socket
import struct
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

from ketch._backends import sandbox
from ketch._backends.base import ContainerSpec, LogSink
from ketch._utils.protocol import fork as fp

# Variables that differ between containers of one template; a child gets them in its fork
# request. Everything else in the environment is the template's own (a change of it, such
# as a rotated secret, makes a new template).
PER_CONTAINER_ENV = frozenset(
    {"KETCH_CONTAINER_ID", "KETCH_TOKEN", "CUDA_VISIBLE_DEVICES", "NVIDIA_VISIBLE_DEVICES"}
)
# A template that failed to load is tried again after this long (the failure may have been
# passing: a file not there yet); meanwhile containers start as plain processes.
_RETRY_FAILED = 30.0
# A fork is a few milliseconds; no answer in this long means the template is broken.
_FORK_ANSWER_TIMEOUT = 10.0
# After a child's exit shows on its pidfd, how long the template's report (with the exit
# code) may take before the exit is taken without a code.
_EXIT_REPORT_GRACE = 2.0
_MAX_MESSAGE = 1 << 20


def plain_start_reason(spec: ContainerSpec) -> str | None:
    """Why containers like `spec` are not forked (None: they may be)."""
    if spec.isolate_network or spec.block_network:
        return (
            "its containers get a network namespace of their own, which a forked "
            "process cannot enter on Python 3.11"
        )
    if spec.volumes:
        return "its volumes are mounted in a mount namespace of the container's own"
    if spec.cpu is not None or spec.memory_mb is not None:
        return "its cpu/memory limits are set up as the container's process starts"
    if spec.gpus:
        return "it uses GPUs (a process that may have set up CUDA must not fork)"
    return None


class ForkedProcess:
    """A forked container's process, as LocalContainer uses a plain one: pid, returncode,
    wait(), stdout and stderr streams."""

    def __init__(self, pid: int, template: Template) -> None:
        self.pid = pid
        self.returncode: int | None = None
        self.stdout: asyncio.StreamReader | None = None
        self.stderr: asyncio.StreamReader | None = None
        self._template = template
        self._loop = asyncio.get_running_loop()
        self._done: asyncio.Future[int | None] = self._loop.create_future()
        self._pidfd = -1
        try:
            self._pidfd = os.pidfd_open(pid)
            self._loop.add_reader(self._pidfd, self._gone)
        except OSError:
            pass  # already gone: the template's report of its exit is on its way

    async def attach_pipes(self, out_fd: int, err_fd: int) -> None:
        self.stdout = await _stream(out_fd)
        self.stderr = await _stream(err_fd)

    def exited(self, code: int | None) -> None:
        if self._done.done():
            return
        self.returncode = code
        self._done.set_result(code)
        if self._pidfd >= 0:
            self._loop.remove_reader(self._pidfd)
            os.close(self._pidfd)
            self._pidfd = -1

    def _gone(self) -> None:
        """The process has ended (its pidfd is readable). The exit counts now, not when the
        template gets round to reaping it: until then the scheduler would still send work
        to it. While it is a zombie its exit status is in /proc; once reaped, the template's
        report (with the code) is on its way, and without a template there is no code."""
        if self._pidfd >= 0:
            self._loop.remove_reader(self._pidfd)
        code = _zombie_exit_code(self.pid)
        if code is not None or self._template.closed:
            self.exited(code)
        else:
            self._loop.call_later(_EXIT_REPORT_GRACE, self.exited, None)

    def template_gone(self) -> None:
        if self._pidfd < 0:
            self.exited(None)

    async def wait(self) -> int | None:
        return await asyncio.shield(self._done)


def _zombie_exit_code(pid: int) -> int | None:
    """The exit code of `pid` while it is a zombie not yet reaped by its parent (a zombie's
    pid cannot be reused, so it is still the process that exited), else None."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    # Field 3 is the state; field 52 (Linux 3.5+) the wait status, as waitpid reports it.
    if len(fields) < 50 or fields[0] != "Z":
        return None
    try:
        return os.waitstatus_to_exitcode(int(fields[49]))
    except ValueError:
        return None


async def _stream(fd: int) -> asyncio.StreamReader:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=2**20, loop=loop)
    await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader, loop=loop), os.fdopen(fd, "rb", buffering=0)
    )
    return reader


class Template:
    """One template process and its control socket."""

    def __init__(
        self,
        key: str,
        spec: ContainerSpec,
        env: dict[str, str],
        log: LogSink | None,
        bwrap: str | None = None,
    ) -> None:
        assert spec.fork is not None
        self.key = key
        # Sandboxed (bwrap): the template and its children live in a pid namespace of their
        # own, so the pids it reports are translated to the host's (`_host_pid`).
        self.bwrap = sandbox.bwrap_for(spec.sandbox, bwrap)
        self.host_pid: int | None = None
        self.group = spec.fork.group
        self.state = "starting"  # starting | ready | failed | unsafe | closed
        self.origin = "started by a container's start"  # or at deploy (ForkServer.prepare)
        self.why = ""
        self.failed_at = 0.0
        self.closed = False
        self.used = time.monotonic()
        self._log: LogSink | None = log
        self._output: list[tuple[str, str]] = []  # held until it is known whether to show it
        loop = asyncio.get_running_loop()
        self.ready: asyncio.Future[None] = loop.create_future()
        self._pending: dict[str, tuple[asyncio.Future[ForkedProcess | None], int, int]] = {}
        self.children: dict[int, ForkedProcess] = {}
        self.proc: asyncio.subprocess.Process | None = None
        self.sock, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.sock.setblocking(False)
        # Each message then carries its sender's pid as the host sees it (SCM_CREDENTIALS).
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self._task = asyncio.ensure_future(self._run(spec, env, theirs))

    # -- life ---------------------------------------------------------------------------
    async def _run(self, spec: ContainerSpec, env: dict[str, str], theirs: socket.socket) -> None:
        assert spec.fork is not None
        fork = spec.fork
        load = {"t": fp.LOAD, **fork.preload, "snapshot": fork.snapshot}
        env = {k: v for k, v in env.items() if k not in PER_CONTAINER_ENV}
        # Code that asks whether it runs in a container (ketch's own App and Image among
        # them) must get the answer a container gets: yes. Each child gets its own id.
        env["KETCH_CONTAINER_ID"] = "template-" + self.key.rpartition("|")[2]
        env["KETCH_TEMPLATE_FD"] = str(theirs.fileno())
        argv = [str(spec.python), "-m", "ketch._runtime.template"]
        if self.bwrap is not None and spec.sandbox is not None:
            argv = sandbox.wrap(self.bwrap, spec.sandbox, argv, str(spec.cwd))
        try:
            self.proc = await asyncio.create_subprocess_exec(
                *argv,
                env=env,
                cwd=sandbox.host_cwd(spec.sandbox if self.bwrap else None, str(spec.cwd)),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                pass_fds=(theirs.fileno(),),
                start_new_session=True,
                limit=2**20,
            )
        except OSError as exc:
            self.settle("failed", f"its template process could not start ({exc})")
            self.close()
            return
        finally:
            theirs.close()
        if self.closed:  # retired or evicted while the process was being started
            self.proc.kill()
            await self.proc.wait()
            return
        loop = asyncio.get_running_loop()
        loop.add_reader(self.sock.fileno(), self._readable)
        try:
            self.sock.send(json.dumps(load).encode())
        except OSError as exc:
            self.settle("failed", f"the function could not be sent to its template ({exc})")
            self.close()
            return
        assert self.proc.stdout is not None
        while line := await self.proc.stdout.readline():
            self._output_line(line.decode(errors="replace").rstrip("\n"))
        await self.proc.wait()
        if self.state == "starting":
            tail = "; ".join(text for _, text in self._output[-3:]) or "no output"
            self.settle(
                "failed",
                f"its template exited with code {self.proc.returncode} while loading ({tail})",
            )
        self.close()

    def _output_line(self, line: str) -> None:
        # What the user's import printed shows once, in the log of the container whose start
        # made the template (its first, if started at deploy); held back until then, and
        # dropped when loading failed, since the plain start then prints it again.
        if self.state == "starting" or (self.state == "ready" and self._log is None):
            self._output.append(("stdout", line))
            del self._output[:-200]
        elif self.state == "ready" and self._log is not None:
            self._log("stdout", line)

    def settle(self, state: str, why: str = "") -> None:
        """Decide, once, what came of loading: ready, failed, unsafe or closed; starts that
        wait for the template go on."""
        if self.state != "starting":
            return
        self.state = state
        self.why = why
        if state != "ready":
            self.failed_at = time.monotonic()
            self._output.clear()
        elif self._log is not None:
            self.adopt(self._log)
        if not self.ready.done():
            self.ready.set_result(None)

    def adopt(self, log: LogSink) -> None:
        """Show what the template printed, and prints later, in `log` (a container's)."""
        self._log = log
        held, self._output = self._output, []
        for stream, line in held:
            log(stream, line)

    def rss_mb(self) -> float:
        """The template's resident memory in MiB (0 when it cannot be read)."""
        pid = self.host_pid or (self.proc.pid if self.proc is not None else None)
        with contextlib.suppress(OSError, ValueError, IndexError):
            status = Path(f"/proc/{pid}/status").read_text()
            return int(status.split("VmRSS:", 1)[1].split()[0]) / 1024
        return 0.0

    def retire(self) -> None:
        """No more forks; the template leaves once its children have."""
        if self.state == "starting" or not self.children:
            self.close()
            return
        self.state = "closed"
        with contextlib.suppress(OSError):
            self.sock.send(fp.RETIRE_FRAME)

    def close(self) -> None:
        """Stop the template now. Its children are not touched: they are containers, and
        the backend stops them like any other."""
        if self.closed:
            return
        self.closed = True
        self.settle("closed", "its template was stopped")
        if self.state == "ready":
            self.state = "closed"  # failed or unsafe stays so: it says why starts are plain
        with contextlib.suppress(Exception):
            asyncio.get_running_loop().remove_reader(self.sock.fileno())
        self.sock.close()
        if self.proc is not None and self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
        for fut, out_r, err_r in self._pending.values():
            os.close(out_r)
            os.close(err_r)
            if not fut.done():
                fut.set_result(None)
        self._pending.clear()
        for child in list(self.children.values()):
            child.template_gone()

    # -- forking ------------------------------------------------------------------------
    async def fork(self, spec: ContainerSpec, env: dict[str, str]) -> ForkedProcess | None:
        """A container forked from this template, or None (then start a plain one)."""
        if self.state != "ready":
            return None
        self.used = time.monotonic()
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        fut: asyncio.Future[ForkedProcess | None] = asyncio.get_running_loop().create_future()
        msg: fp.Fork = {"t": fp.FORK, "cid": spec.container_id, "env": env, "cwd": str(spec.cwd)}
        try:
            socket.send_fds(self.sock, [json.dumps(msg).encode()], [out_w, err_w])
        except OSError as exc:  # e.g. an environment too large for one message
            self.why = f"the fork request could not be sent ({exc})"
            os.close(out_r)
            os.close(err_r)
            return None
        finally:
            os.close(out_w)
            os.close(err_w)
        self._pending[spec.container_id] = (fut, out_r, err_r)
        try:
            proc = await asyncio.wait_for(asyncio.shield(fut), _FORK_ANSWER_TIMEOUT)
        except TimeoutError:
            self.state = "unsafe"
            self.why = "its template stopped answering"
            self.close()
            return None
        if proc is not None:
            await proc.attach_pipes(out_r, err_r)
        return proc

    def _readable(self) -> None:
        while not self.closed:
            try:
                data, fds, sender = _recv(self.sock)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                data, fds, sender = b"", [], None
            for fd in fds:  # the template sends none; never leak what arrives
                os.close(fd)
            if sender is not None:
                self.host_pid = sender
            if not data:
                self.close()
                return
            try:
                self._on_message(json.loads(data))
            except (ValueError, KeyError, TypeError):
                self.settle("failed", "its template sent a message that makes no sense")
                self.close()
                return

    def _on_message(self, msg: dict[str, Any]) -> None:
        self.HANDLERS[msg["t"]](self, msg)  # an unknown kind: KeyError, "makes no sense"

    def _on_ready(self, msg: fp.Ready) -> None:
        self.settle("ready")

    def _on_failed(self, msg: fp.Failed) -> None:
        self.settle("failed", f"loading the function failed ({msg['error']})")

    def _on_unsafe(self, msg: fp.Unsafe) -> None:
        self.settle("unsafe", f"it is not safe to fork after loading it: {msg['why']}")

    def _on_forked(self, msg: fp.Forked) -> None:
        entry = self._pending.pop(msg["cid"], None)
        pid = int(msg["pid"])
        host = pid if self.bwrap is None else _host_pid(self.host_pid, pid)
        if host is None:  # gone already, or not the template's child: start it plainly
            if entry is not None and not entry[0].done():
                os.close(entry[1])
                os.close(entry[2])
                entry[0].set_result(None)
            return
        proc = ForkedProcess(host, self)
        self.children[pid] = proc  # by the template's pid for it: its exit reports use it
        if entry is not None and not entry[0].done():
            entry[0].set_result(proc)

    def _on_refused(self, msg: fp.Refused) -> None:
        # Something started a thread after loading: no more forks from this template.
        self.state = "unsafe"
        self.why = f"it is not safe to fork any more: {msg['why']}"
        self.failed_at = time.monotonic()
        with contextlib.suppress(OSError):
            self.sock.send(fp.RETIRE_FRAME)  # it leaves once its children have
        entry = self._pending.pop(msg["cid"], None)
        if entry is not None:
            os.close(entry[1])
            os.close(entry[2])
            if not entry[0].done():
                entry[0].set_result(None)

    def _on_exit(self, msg: fp.Exit) -> None:
        child = self.children.pop(int(msg["pid"]), None)
        if child is not None:
            code = msg.get("code")
            child.exited(int(code) if code is not None else None)

    HANDLERS: ClassVar[dict[str, Callable[[Template, Any], None]]] = {
        fp.READY: _on_ready,
        fp.FAILED: _on_failed,
        fp.UNSAFE: _on_unsafe,
        fp.FORKED: _on_forked,
        fp.REFUSED: _on_refused,
        fp.EXIT: _on_exit,
    }


class ForkServer:
    """The templates of one backend, by what they load; at most `max_templates` of them are
    kept (the least recently used goes first; it comes back on its function's next start)."""

    def __init__(
        self, max_templates: int = 16, bwrap: str | None = None, deploy_mb: int = 0
    ) -> None:
        self.max_templates = max(1, max_templates)
        self.deploy_mb = deploy_mb  # MiB all templates stay within when `prepare` starts one
        self.bwrap = bwrap  # templates of sandboxed containers run under it
        self.templates: collections.OrderedDict[str, Template] = collections.OrderedDict()
        self._told: set[tuple[str, str]] = set()

    async def start(
        self, spec: ContainerSpec, env: dict[str, str], log: LogSink
    ) -> ForkedProcess | None:
        """The container forked from its function's template, or None when it must start as
        a plain process (its log says why, once per function and reason)."""
        fork = spec.fork
        assert fork is not None
        why = plain_start_reason(spec)
        if why is not None:
            self._tell(fork.group, why, log)
            return None
        tpl = self._template(spec, env, log)
        if tpl is None:
            self._tell(fork.group, "its template could not be described", log)
            return None
        if not tpl.ready.done():
            try:
                await asyncio.wait_for(asyncio.shield(tpl.ready), fork.startup_timeout)
            except TimeoutError:
                tpl.settle(
                    "failed",
                    "its template took longer than "
                    f"startup_timeout={fork.startup_timeout:g}s to load it",
                )
                tpl.close()
                raise RuntimeError(
                    f"container did not start within startup_timeout={fork.startup_timeout:g}s "
                    "(its function was still loading in the fork server's template)"
                ) from None
        proc = await tpl.fork(spec, env)
        if proc is None:
            self._tell(fork.group, tpl.why or "its template is not available", log)
        else:
            log("event", f"container forked from its function's template ({tpl.origin})")
        return proc

    def prepare(self, spec: ContainerSpec, env: dict[str, str]) -> None:
        """Start the template of containers like `spec` before the first (its function was
        deployed); the least recently used go first, within max_templates and deploy_mb."""
        fork = spec.fork
        if self.deploy_mb <= 0 or fork is None or plain_start_reason(spec) is not None:
            return
        key = _key(spec, env)
        if key is None or key in self.templates:
            return
        while self.templates and (
            len(self.templates) >= self.max_templates
            or sum(t.rss_mb() for t in self.templates.values()) >= self.deploy_mb
        ):
            _, old = self.templates.popitem(last=False)
            old.retire()
        tpl = self.templates[key] = Template(key, spec, env, None, self.bwrap)
        tpl.origin = "started at deploy"

    def _tell(self, group: str, why: str, log: LogSink) -> None:
        if (group, why) not in self._told:
            self._told.add((group, why))
            log(
                "system",
                f"fork server not used for this function: {why}; "
                "its containers start as plain processes",
            )

    def _template(self, spec: ContainerSpec, env: dict[str, str], log: LogSink) -> Template | None:
        key = _key(spec, env)
        if key is None:
            return None
        tpl = self.templates.get(key)
        if tpl is not None and (
            tpl.state in ("starting", "ready", "unsafe")
            or time.monotonic() - tpl.failed_at < _RETRY_FAILED
        ):
            self.templates.move_to_end(key)
            tpl.used = time.monotonic()
            if tpl._log is None:
                tpl.adopt(log)
            return tpl
        if tpl is not None:
            tpl.close()
        while len(self.templates) >= self.max_templates:
            _, old = self.templates.popitem(last=False)
            old.retire()
        tpl = self.templates[key] = Template(key, spec, env, log, self.bwrap)
        return tpl

    def retire(self, group: str) -> None:
        for key, tpl in list(self.templates.items()):
            if tpl.group == group:
                del self.templates[key]
                tpl.retire()
        self._told = {t for t in self._told if t[0] != group}

    async def close(self) -> None:
        for tpl in self.templates.values():
            tpl.close()
        self.templates.clear()


def _key(spec: ContainerSpec, env: dict[str, str]) -> str | None:
    """What a template is for: the function's code and everything it sees at import."""
    fork = spec.fork
    assert fork is not None
    shared = {k: v for k, v in env.items() if k not in PER_CONTAINER_ENV}
    try:
        text = json.dumps(
            [
                fork.group,
                fork.preload,
                fork.snapshot,
                str(spec.python),
                str(spec.cwd),
                shared,
                repr(spec.sandbox),
            ],
            sort_keys=True,
        )
    except (TypeError, ValueError):
        return None
    return f"{fork.group}|{hashlib.sha256(text.encode()).hexdigest()[:16]}"


_CREDS = struct.Struct("3i")  # struct ucred: pid, uid, gid


def _recv(sock: socket.socket) -> tuple[bytes, list[int], int | None]:
    """One message from a template: its bytes, the descriptors that came with it, and the
    sender's pid in the host's pid namespace (the kernel's translation of SCM_CREDENTIALS)."""
    space = socket.CMSG_SPACE(4 * 4) + socket.CMSG_SPACE(_CREDS.size)
    data, ancillary, _flags, _addr = sock.recvmsg(_MAX_MESSAGE, space)
    fds: list[int] = []
    sender = None
    for level, kind, payload in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            usable = len(payload) - len(payload) % 4
            fds += list(array.array("i", payload[:usable]))
        elif level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
            sender = _CREDS.unpack(payload[: _CREDS.size])[0]
    return data, fds, sender


def _host_pid(template: int | None, pid: int) -> int | None:
    """The host's pid of the template's child that it knows as `pid` (its pid namespace's),
    found among the template's children by the pids the kernel lists for each (NSpid)."""
    if template is None:
        return None
    try:
        with open(f"/proc/{template}/task/{template}/children") as fh:
            children = fh.read().split()
    except OSError:
        return None
    for child in children:
        try:
            with open(f"/proc/{child}/status") as fh:
                for line in fh:
                    if line.startswith("NSpid:"):
                        if int(line.split()[-1]) == pid:
                            return int(child)
                        break
        except (OSError, ValueError):
            continue
    return None
