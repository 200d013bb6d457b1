"""The ketch server process: call port, management API, scheduler and store in one loop."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import json
import logging
import os
import secrets
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ketch
from ketch._backends.base import load_backend
from ketch._server import runtime_dist
from ketch._server.apps import AppManager
from ketch._server.build_secrets import BuildSecrets
from ketch._server.calls import CallLimits, CallServer
from ketch._server.crypto import SecretBox
from ketch._server.images import ImageBuilder, volume_dir
from ketch._server.logs import LogHub
from ketch._server.scheduler import Scheduler
from ketch._server.store import Store
from ketch.config import Config

log = logging.getLogger("ketch.server")


def read_or_create_token(home: Path) -> str:
    path = home / "token"
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text().strip()
    token = "kt-" + secrets.token_urlsafe(32)
    with os.fdopen(fd, "w") as fh:
        fh.write(token)
    return token


def sockets_dir(home: Path) -> Path:
    """Where the unix sockets live (the server's for containers, containers' web servers).
    Socket paths are limited to ~107 bytes; deep state directories (test temp dirs) fall
    back to a short directory in /tmp named after the home."""
    path = home / "sock"
    if len(str(path)) > 60:
        digest = hashlib.sha256(str(home).encode()).hexdigest()[:16]
        path = Path(tempfile.gettempdir()) / f"ketch-{digest}"
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    if not _private_dir(path):
        # /tmp is shared: another local user may have made this name first to swap our
        # sockets. Never use a directory we do not own alone; take a fresh private one.
        log.warning("sockets directory %s is not private to this user; using a new one", path)
        path = Path(tempfile.mkdtemp(prefix=f"ketch-{os.getuid()}-"))
    return path


def _private_dir(path: Path) -> bool:
    """A real directory (not a link), owned by this user, that no one else can enter."""
    import stat

    st = os.lstat(path)
    return stat.S_ISDIR(st.st_mode) and st.st_uid == os.geteuid() and not st.st_mode & 0o077


def _bind(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(1024)
    sock.setblocking(False)
    return sock


class Server:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.home = config.home
        self.started = time.time()
        self.home.mkdir(parents=True, exist_ok=True)
        os.chmod(self.home, 0o700)
        self.token = read_or_create_token(self.home)
        self.store = Store(self.home / "ketch.db")
        self.logs = LogHub(self.home / "logs", config.log_retention_bytes)
        self.box = SecretBox(self.home / "secret.key")
        # Registry logins read stored secrets (of the deploying app's environment, unless
        # the Secret names its own).
        self.builder = ImageBuilder(
            self.home / "images",
            secrets=lambda env, name: self.apps.secret_values(env or "main", name),
            volumes=lambda env, ref: volume_dir(self.apps.volumes, env, ref),
            build_secrets=BuildSecrets(self.home / "build-secrets", self.box),
        )
        self.runtime_core, self.runtime_web = runtime_dist.install(self.home)
        self._stopping = asyncio.Event()
        self.sockets_dir = sockets_dir(self.home)
        self.unix_path = self.sockets_dir / "call.sock"

    async def run(self) -> None:
        cfg = self.config
        call_sock = _bind(cfg.server_host, cfg.call_port)
        api_sock = _bind(cfg.server_host, cfg.api_port)
        call_port = call_sock.getsockname()[1]
        api_port = api_sock.getsockname()[1]
        backend = load_backend(cfg.backend, cfg)
        self.scheduler = Scheduler(
            backend=backend,
            store=self.store,
            logs=self.logs,
            # The unix socket locally; the call port over TCP for containers on other nodes.
            call_addr=backend.call_address(str(self.unix_path), cfg.server_host, call_port),
            token=self.token,
            result_ttl=cfg.result_ttl,
            secret_env=lambda fdef: self.apps.function_env(fdef),
            stop_grace=cfg.stop_grace,
            runtime_paths=(str(self.runtime_core), str(self.runtime_web)),
            sockets_dir=self.sockets_dir,
            max_queue=cfg.max_queue,
            prefetch=cfg.prefetch,
            prefetch_budget=cfg.prefetch_ms / 1000,
        )
        from ketch._server.build_gpus import BuildGpus

        # Build steps that ask for a GPU take it from the containers' allocator.
        self.builder.rootfs.gpus = BuildGpus(
            self.scheduler.gpus, self.scheduler.lifecycle.gpus_freed
        )
        from ketch._server.records import CallRecorder

        self.records = CallRecorder(self.store, cfg.call_records)
        self.scheduler.on_input_done = self.records.input_done
        self.scheduler.on_web_done = self.records.web_done
        from ketch._gateway.proxy import Limits
        from ketch._server.web_service import WebService

        self.web = WebService(
            self.scheduler,
            self.store,
            host=cfg.server_host,
            port=cfg.gateway_port,
            domain=cfg.domain,
            rate=cfg.rate_limit,
            burst=cfg.rate_burst,
            trusted_proxies=frozenset(
                p.strip() for p in cfg.trusted_proxies.split(",") if p.strip() not in ("", "-")
            ),
            limits=Limits(request_timeout=cfg.request_timeout),
            tls_cert=cfg.tls_cert,
            tls_key=cfg.tls_key,
        )
        from ketch._server.tracing import from_config

        # OpenTelemetry export (O5): None when otel_endpoint is not set, and nothing of the
        # SDK is imported then.
        self.tracing = from_config(cfg)
        if self.tracing is not None:
            self.tracing.install(self.scheduler, self.logs, self.web.gateway)
        gateway_port = await self.web.start()
        self.apps = AppManager(
            self.home,
            self.store,
            self.scheduler,
            self.builder,
            self.box,
            web=self.web,
            workspace=cfg.workspace,
            on_note=lambda app_id, line: self.logs.emit(app_id, "-", "ketch", "system", line),
            logs=self.logs,
        )
        from ketch._server.schedules import Schedules, running_schedules

        self.schedules = Schedules(
            self.store,
            self.scheduler.clock,
            lambda: running_schedules(self.apps),
            self.scheduler.spawn,
            note=lambda app_id, line: self.logs.emit(app_id, "-", "ketch", "system", line),
        )
        from ketch._server.objects import Limits as ObjectLimits
        from ketch._server.objects import ObjectServer

        objects = ObjectServer(
            self.store,
            self.home / "objects",
            ObjectLimits(cfg.dict_value_limit, cfg.queue_item_limit, cfg.queue_partition_size),
        )
        limits = CallLimits(
            preauth_frame=cfg.max_frame_preauth,
            max_message=cfg.max_message_bytes,
            hello_timeout=cfg.hello_timeout,
            max_unauthenticated=cfg.max_unauthenticated,
        )
        from ketch._server.sandboxes import SandboxManager

        self.sandboxes = SandboxManager(self)
        self.calls = CallServer(self.scheduler, self.apps, self.logs, self.token, objects, limits)
        # Spawned calls' requests are stored with their inline secrets sealed by this box.
        self.scheduler.box = self.box
        call_server = await asyncio.start_server(self.calls.handle, sock=call_sock, limit=2**20)
        unix_server = await asyncio.start_unix_server(
            self.calls.handle, path=str(self.unix_path), limit=2**20
        )

        import uvicorn

        from ketch._server.api.core import build_api

        uv_config = uvicorn.Config(
            build_api(self),
            log_level="warning",
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=1,
        )
        api = uvicorn.Server(uv_config)
        # The server process owns SIGTERM/SIGINT (it stops containers first); uvicorn must
        # not take them over.
        api.capture_signals = contextlib.nullcontext  # type: ignore[method-assign,assignment]
        # Containers reach the API (volume files) on a unix socket beside the call socket.
        api_unix = _bind_unix(self.sockets_dir / "api.sock")
        api_task = asyncio.ensure_future(api.serve(sockets=[api_sock, api_unix]))

        restored = await self.apps.restore(lambda line: log.info("%s", line))
        resumed = self.scheduler.resume_pending_calls()
        modal_wire = None
        if cfg.modal_wire:
            from ketch._modal_wire.server import start as start_modal_wire

            modal_wire, modal_wire_url = await start_modal_wire(self, cfg.modal_wire)
            log.info("Modal front end: MODAL_SERVER_URL=%s", modal_wire_url)
        info = {
            "pid": os.getpid(),
            "host": cfg.server_host,
            "api_port": api_port,
            "call_port": call_port,
            "gateway_port": gateway_port,
            "started": self.started,
            "version": ketch.__version__,
        }
        if modal_wire is not None:
            info["modal_wire_url"] = modal_wire_url
        _write_json_atomic(cfg.server_file, info)
        log.info(
            "ketch server up: api %s, calls %s, %d apps restored, %d calls resumed",
            api_port,
            call_port,
            restored,
            resumed,
        )
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stopping.set)
        ticker = asyncio.ensure_future(self._tick())
        try:
            await self._stopping.wait()
        finally:
            ticker.cancel()
            self.schedules.close()
            with contextlib.suppress(FileNotFoundError, json.JSONDecodeError):
                if json.loads(cfg.server_file.read_text()).get("pid") == os.getpid():
                    cfg.server_file.unlink()
            with contextlib.suppress(Exception):
                self.records.flush()
            await self.sandboxes.close()
            if modal_wire is not None:
                await modal_wire.close()
            await self.scheduler.shutdown()
            await self.scheduler.backend.close()  # fork-server templates, network helpers
            await self.web.close()
            call_server.close()
            unix_server.close()
            self.unix_path.unlink(missing_ok=True)
            (self.sockets_dir / "api.sock").unlink(missing_ok=True)
            api.should_exit = True
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                await asyncio.wait_for(api_task, 3)
            self.store.close()
            if self.tracing is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(asyncio.to_thread(self.tracing.shutdown), 5)

    async def _tick(self) -> None:
        last_expiry = 0.0
        last_tick = 0.0
        failing: set[str] = set()  # steps whose failure is logged: once, until they recover

        def step(name: str, work: Callable[[], object]) -> None:
            # Each step on its own: a failing one must not stop the others (nor flood the
            # log every quarter second).
            try:
                work()
            except Exception:
                if name not in failing:
                    failing.add(name)
                    log.exception("periodic work (%s) failed; retrying", name)
            else:
                failing.discard(name)

        while True:
            await asyncio.sleep(0.25)
            step("deadlines", self.scheduler.sweep_deadlines)
            # Deploys and stops are seen within a quarter second; runs fire on a timer.
            step("schedules", self.schedules.reconcile)
            if time.monotonic() - last_tick < 1.0:
                continue
            last_tick = time.monotonic()
            step("scaling", self.scheduler.tick)
            step("call records", self.records.flush)
            if time.time() - last_expiry > 300:
                last_expiry = time.time()
                step("result expiry", lambda: self.store.expire_results(time.time()))


def _bind_unix(path: Path) -> socket.socket:
    path.unlink(missing_ok=True)  # left by a server that was killed
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(path))
    sock.listen(1024)
    sock.setblocking(False)
    return sock


def _write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data))
    tmp.replace(path)


def main() -> None:
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    config = Config.load()
    config.home.mkdir(parents=True, exist_ok=True)
    # One server per state directory: the lock is held for the life of the process.
    lock = (config.home / "server.lock").open("a+")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        print(f"ketch: a server is already running for {config.home}", file=sys.stderr)
        sys.exit(3)
    loop_factory: Callable[[], asyncio.AbstractEventLoop] = asyncio.new_event_loop
    try:
        import uvloop

        loop_factory = uvloop.new_event_loop
    except ImportError:
        pass
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(Server(config).run())
