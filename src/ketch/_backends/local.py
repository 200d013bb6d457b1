"""Containers as local process groups running `python -m ketch._runtime`.

Networking (see docs/architecture.md, "Networking"): a container shares the host's network
unless its spec says otherwise. `block_network` gives it a new network namespace with only
loopback. `isolate_network` (web_server functions) gives it a namespace of its own as well,
so that servers of several containers can listen on the same port, and wires that
namespace to the outside with slirp4netns, a user-mode TCP/IP stack: outbound connections
are made by the host on the container's behalf, and the host's own 127.0.0.1 is reachable
at HOST_LOOPBACK_ADDR. Web traffic comes in through the runtime's unix socket, which lives
on the filesystem and so needs no network.
"""

from __future__ import annotations

import asyncio
import atexit
import collections
import contextlib
import ipaddress
import os
import shlex
import shutil
import signal
import tempfile
from pathlib import Path

from ketch._backends import limits as _limits
from ketch._backends import sandbox
from ketch._backends.base import (
    EXITED,
    KILLED,
    OOM,
    Backend,
    Capacity,
    ContainerHandle,
    ContainerSpec,
    LogSink,
    pump_lines,
)
from ketch._backends.forkserver import ForkedProcess, ForkServer
from ketch.config import Config

# slirp4netns' defaults: the namespace gets 10.0.2.100/24, the gateway 10.0.2.2 stands for
# the host's loopback and 10.0.2.3 is a DNS forwarder to the host's resolvers.
HOST_LOOPBACK_ADDR = "10.0.2.2"
SLIRP_DNS_ADDR = "10.0.2.3"
# A large MTU makes bulk transfers through the user-mode stack much cheaper.
_SLIRP_MTU = 65520
# Creating the namespace and wiring it takes milliseconds; this only bounds a broken setup.
_NETWORK_SETUP_TIMEOUT = 15.0
_NETNS_MARK = b"ketch:netns\n"
_INSTALL_HINT = (
    "web_server containers get a network namespace of their own (so that several can "
    "listen on the same port) and need slirp4netns for their outbound traffic; install it "
    "(Debian/Ubuntu: apt-get install slirp4netns; scripts/setup does this when run as root)"
)


class _NetHelper:
    """The slirp4netns process that serves one container's network namespace.

    It exits when the read end of its exit pipe sees EOF, that is when `release` closes the
    write end, or when the server dies (the kernel closes the server's descriptors), so that
    no helper outlives its container or the server.
    """

    def __init__(self, proc: asyncio.subprocess.Process, exit_fd: int) -> None:
        self.proc = proc
        self._exit_fd = exit_fd
        self.tail: collections.deque[str] = collections.deque(maxlen=20)
        self._drain = asyncio.ensure_future(self._read_output())

    async def _read_output(self) -> None:
        # Read everything so that the helper never blocks on a full pipe; keep the end for
        # error messages.
        stream = self.proc.stdout
        if stream is None:
            return
        while line := await stream.readline():
            self.tail.append(line.decode(errors="replace").rstrip())

    def output(self) -> str:
        return "; ".join(line for line in self.tail if line) or "no output"

    def release(self) -> None:
        if self._exit_fd >= 0:
            os.close(self._exit_fd)
            self._exit_fd = -1

    async def close(self) -> None:
        self.release()
        try:
            await asyncio.wait_for(self.proc.wait(), 5.0)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
            await self.proc.wait()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._drain, 2.0)


class LocalContainer(ContainerHandle):
    def __init__(
        self,
        container_id: str,
        proc: asyncio.subprocess.Process | ForkedProcess,
        log: LogSink,
        net: _NetHelper | None = None,
        limits: _limits.Limits | None = None,
    ) -> None:
        self.container_id = container_id
        self.proc = proc
        self.net = net
        self.limits = limits  # cpu= / memory= (S8): its cgroups go when it has exited
        self._log = log
        self._killed = False
        self._pumps = [
            asyncio.ensure_future(pump_lines(proc.stdout, "stdout", log)),
            asyncio.ensure_future(pump_lines(proc.stderr, "stderr", log)),
        ]

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def start_method(self) -> str:
        """How it started: forked from a template, or a plain new interpreter."""
        return "fork" if isinstance(self.proc, ForkedProcess) else "plain"

    def _signal(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, sig)

    async def stop(self, grace: float) -> None:
        if self.proc.returncode is not None:
            return
        self._signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(self.proc.wait(), grace)
        except TimeoutError:
            self.kill()
            await self.proc.wait()

    def kill(self) -> None:
        self._killed = True
        self._signal(signal.SIGKILL)

    async def wait(self) -> tuple[str, int | None]:
        try:
            code = await self.proc.wait()
            # Let the log pumps finish so the last lines (often the reason) are not lost.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.gather(*self._pumps), 2.0)
            self._signal(signal.SIGKILL)  # children the user left behind go with the container
        except asyncio.CancelledError:
            if self.limits is not None:  # the server is stopping: leave no cgroup behind
                self._signal(signal.SIGKILL)
                self.limits.cleanup()
            raise
        finally:
            if self.net is not None:
                self.net.release()  # even when cancelled: the helper then exits by itself
        if self.net is not None:
            await self.net.close()
        reason = KILLED if self._killed or code == -signal.SIGKILL else EXITED
        if self.limits is not None:
            if self.limits.oom_killed():
                reason = OOM
                self._log(
                    "system",
                    f"container killed: out of memory (over its limit of "
                    f"{self.limits.memory_mb} MiB, {self.limits.mechanism})",
                )
            self.limits.cleanup()
        return reason, code


def _new_netns_prefix(mounts: bool = False) -> list[str]:
    """Run the command in a new, empty network namespace (and a mount namespace of its own
    when `mounts`). The container still reaches the server through its unix socket, which
    lives on the filesystem. Without root, a user namespace grants the rights to do so."""
    unshare = shutil.which("unshare")
    if unshare is None:
        raise RuntimeError("a container network namespace needs the `unshare` command (util-linux)")
    flags = ["-n", "-m"] if mounts else ["-n"]
    return [unshare, *flags] if os.geteuid() == 0 else [unshare, "-r", *flags]


def _loopback_up() -> str:
    # A new namespace's loopback is down: servers that the container starts for itself on
    # 127.0.0.1 (and the web_server bridge) need it up. Without `ip` it stays down.
    return "ip link set lo up 2>/dev/null; " if shutil.which("ip") else ""


def _resolv_conf_override(host_conf: Path = Path("/etc/resolv.conf")) -> str | None:
    """Where the host's resolvers are all on its loopback (systemd-resolved's 127.0.0.53),
    the container cannot reach them from its namespace: it then gets a resolv.conf naming
    slirp4netns' DNS forwarder instead. Returns that file's text, or None when the host's
    file serves as it is."""
    try:
        lines = host_conf.read_text().splitlines()
    except OSError:
        return None
    servers = [
        ln.split()[1] for ln in lines if ln.split()[:1] == ["nameserver"] and len(ln.split()) > 1
    ]
    try:
        loopback = bool(servers) and all(
            ipaddress.ip_address(s.partition("%")[0]).is_loopback for s in servers
        )
    except ValueError:
        return None
    if not loopback:
        return None
    kept = [ln for ln in lines if ln.split()[:1] in (["search"], ["domain"], ["options"])]
    return "\n".join([f"nameserver {SLIRP_DNS_ADDR}", *kept]) + "\n"


def _isolated_argv(argv: list[str], resolv_conf: Path | None) -> list[str]:
    """The container's command in a namespace of its own, held back until its network is
    wired: the shell says it is inside the namespace, waits for a line on stdin, then
    becomes the runtime (same pid, so the process group and the pid given to slirp4netns
    stay the container's). With `resolv_conf`, that file is mounted over /etc/resolv.conf
    in a mount namespace of the container's own."""
    setup = ""
    if resolv_conf is not None:
        setup = f"mount --bind {shlex.quote(str(resolv_conf))} /etc/resolv.conf && "
    script = f'{setup}echo ketch:netns && read -r _ && exec "$0" "$@" </dev/null'
    return [*_new_netns_prefix(mounts=resolv_conf is not None), "/bin/sh", "-c", script, *argv]


async def _read_byte(fd: int, timeout: float) -> bytes:
    """One byte from the pipe `fd` (b"" at EOF or timeout); closes `fd`."""
    loop = asyncio.get_running_loop()
    got: asyncio.Future[bytes] = loop.create_future()

    def readable() -> None:
        loop.remove_reader(fd)
        try:
            data = os.read(fd, 1)
        except OSError:
            data = b""
        if not got.done():
            got.set_result(data)

    os.set_blocking(fd, False)
    loop.add_reader(fd, readable)
    try:
        return await asyncio.wait_for(got, timeout)
    except TimeoutError:
        return b""
    finally:
        loop.remove_reader(fd)
        os.close(fd)


async def _wire_network(proc: asyncio.subprocess.Process, slirp: str) -> _NetHelper:
    """Connect the namespace of the held-back container `proc` to the outside, then let it
    go on. Raises RuntimeError, saying why, if either step fails."""
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    try:
        mark = await asyncio.wait_for(proc.stdout.readline(), _NETWORK_SETUP_TIMEOUT)
    except TimeoutError:
        mark = b""
    if mark != _NETNS_MARK:
        try:
            detail = await asyncio.wait_for(proc.stderr.read(4096), 2.0)
        except TimeoutError:
            detail = b""
        raise RuntimeError(
            "could not create the container's network namespace: "
            + (detail.decode(errors="replace").strip() or "no output")
        )
    exit_r, exit_w = os.pipe()
    ready_r, ready_w = os.pipe()
    try:
        helper = await asyncio.create_subprocess_exec(
            slirp,
            "--configure",
            f"--mtu={_SLIRP_MTU}",
            f"--ready-fd={ready_w}",
            f"--exit-fd={exit_r}",
            str(proc.pid),
            "tap0",
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            pass_fds=(exit_r, ready_w),
            # Its own session: signals meant for the container's group (a graceful stop)
            # must not cut the network of requests that are still draining.
            start_new_session=True,
        )
    except BaseException:
        os.close(exit_w)
        os.close(ready_r)
        raise
    finally:
        os.close(exit_r)
        os.close(ready_w)
    net = _NetHelper(helper, exit_w)
    try:
        if await _read_byte(ready_r, _NETWORK_SETUP_TIMEOUT) == b"1":
            proc.stdin.write(b"go\n")
            await proc.stdin.drain()
            proc.stdin.close()
            return net
    except BaseException:
        await net.close()
        raise
    await net.close()
    raise RuntimeError(
        f"slirp4netns could not connect the container's network namespace: {net.output()} "
        "(it needs read-write access to /dev/net/tun, and user namespaces when not root)"
    )


def _shared_env(spec: ContainerSpec) -> dict[str, str]:
    """The environment of a container that shares the host's network (the only kind that
    is forked), as a plain start gives it."""
    return {
        **spec.env,
        **sandbox.share_env(),
        "PYTHONUNBUFFERED": "1",
        "KETCH_HOST_ADDR": "127.0.0.1",
    }


class LocalBackend(Backend):
    def __init__(self, config: Config | None = None) -> None:
        self._private: Path | None = None  # a directory of this server's own (0700)
        config = config or Config()
        # Containers forked from a template that has loaded the function (fork server).
        # bubblewrap, when containers run sandboxed (KETCH_SANDBOX); checked once, here, so
        # that `require` without it stops the server at its start, saying why.
        self._bwrap = sandbox.bwrap_path()
        self.sandboxed = self._bwrap is not None
        self.forks = (
            ForkServer(config.fork_templates, self._bwrap, config.fork_deploy_mb)
            if config.fork_server
            else None
        )

    def _resolv_conf(self) -> Path | None:
        """The resolv.conf for isolated containers when the host's will not do (read each
        time: the host's may change under DHCP). It lives in a private directory: a file
        at a guessable path in /tmp could be planted by another user."""
        text = _resolv_conf_override()
        if text is None:
            return None
        if self._private is None:
            self._private = Path(tempfile.mkdtemp(prefix="ketch-net-"))
            atexit.register(shutil.rmtree, self._private, True)
        path = self._private / "resolv.conf"
        if not path.is_file() or path.read_text() != text:
            tmp = path.with_suffix(".tmp")
            tmp.write_text(text)
            tmp.chmod(0o644)
            os.replace(tmp, path)
        return path

    def retire(self, group: str) -> None:
        if self.forks is not None:
            self.forks.retire(group)

    def prepare(self, spec: ContainerSpec) -> None:
        if self.forks is not None and spec.fork is not None:
            self.forks.prepare(spec, _shared_env(spec))

    async def close(self) -> None:
        if self.forks is not None:
            await self.forks.close()
        if self._private is not None:
            shutil.rmtree(self._private, ignore_errors=True)
            self._private = None

    async def start(self, spec: ContainerSpec, log: LogSink) -> LocalContainer:
        if self.forks is not None and spec.fork is not None:
            forked = await self.forks.start(spec, _shared_env(spec), log)
            if forked is not None:
                return LocalContainer(spec.container_id, forked, log)
        env = {**spec.env, **sandbox.share_env()}
        env["PYTHONUNBUFFERED"] = "1"
        argv = [str(spec.python), *spec.entry]
        bwrap = sandbox.bwrap_for(spec.sandbox, self._bwrap)
        if bwrap is not None and spec.sandbox is not None:
            # Volumes are among the sandbox's own mounts; the network wrappers stay outside,
            # so that slirp4netns can join the namespace they make.
            argv = sandbox.wrap(bwrap, spec.sandbox, argv, str(spec.cwd))
            if spec.volumes:
                from ketch._backends.mounts import volume_env

                # Bind mounts of the sandbox's own; told as the unsandboxed ones are.
                env.update(volume_env("bind", spec.volumes))
        elif spec.volumes:
            from ketch._backends.mounts import volume_argv

            argv, told = volume_argv(spec.volumes, argv)  # innermost: after the network
            env.update(told)
        slirp = None
        if spec.block_network:
            argv = [*_new_netns_prefix(), "/bin/sh", "-c", _loopback_up() + 'exec "$0" "$@"', *argv]
        elif spec.isolate_network:
            slirp = shutil.which("slirp4netns")
            if slirp is None:
                raise RuntimeError(_INSTALL_HINT)  # refused before anything is started
            argv = _isolated_argv(argv, self._resolv_conf())
            env["KETCH_HOST_ADDR"] = HOST_LOOPBACK_ADDR
        else:
            env["KETCH_HOST_ADDR"] = "127.0.0.1"
        # Outermost, so that the namespace helpers and the runtime all run inside the limits.
        limits = _limits.prepare(spec.container_id, spec.cpu, spec.memory_mb)
        if limits is not None:
            argv = limits.wrap(argv)
            log("system", limits.describe())
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                env=env,
                cwd=sandbox.host_cwd(spec.sandbox if bwrap else None, str(spec.cwd)),
                stdin=asyncio.subprocess.PIPE if slirp else asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                start_new_session=True,
                limit=2**20,
            )
        except BaseException:
            if limits is not None:
                limits.cleanup()
            raise
        net = None
        if slirp is not None:
            try:
                net = await _wire_network(proc, slirp)
            except BaseException:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGKILL)
                await proc.wait()
                if limits is not None:
                    limits.cleanup()
                raise
        return LocalContainer(spec.container_id, proc, log, net, limits)

    def capacity(self) -> Capacity:
        cpus = float(os.cpu_count() or 1)
        try:
            pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError):
            pages = 0
        return Capacity(cpus=cpus, memory_mb=pages // 2**20)
