"""The root-filesystem builder: a Debian base from mmdebstrap, then one overlay layer per
RUN/COPY, each content-addressed, built once and shared by every image with that prefix.

Cache layout (`KETCH_ROOTFS_CACHE`, else `<KETCH_HOME>/rootfs`):

    bases/<key>/root        a base root filesystem (`.ok` beside `root` when complete)
    layers/<id>/diff        one layer, an overlay upper directory (whiteouts included)
    layers/<id>/.ok         written last: a layer with it is never rebuilt
    layers/<id>.lock        held while the layer builds, so two builds never race

`<id>` is the first 32 hex digits of the layer's sha256 over (parent key, the step as
canonical JSON, the image configuration it runs under, the hashes of the files it
copies). 32 digits, not 64, keep a deep stack inside one overlay mount's option page.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from ketch._images import bwrap
from ketch._images.bwrap import DEFAULT_PATH, Bind, Sandbox
from ketch._images.context import CopyPlan, resolve_copy, write_archive
from ketch._images.dockerfile import (
    Arg,
    Cmd,
    Copy,
    Entrypoint,
    Env,
    Instruction,
    Run,
    Shell,
    User,
    Workdir,
)
from ketch._images.process import ImageBuildError, LogFn, run_streaming
from ketch._images.swap import replace_published

if TYPE_CHECKING:
    from ketch._images.function_step import StepExtra

__all__ = [
    "DEFAULT_PATH",
    "BaseSource",
    "DebianBase",
    "DirectoryBase",
    "ImageConfig",
    "Op",
    "RootfsBuilder",
    "RootfsImage",
    "command_in_image",
    "mount_layers",
    "rootfs_cache",
]

_FORMAT = 1
_OK = ".ok"
_ID_LEN = 32
_LOCK_POLL = 0.1
_IN = "/tmp/.ketch/in"  # a step's inputs (archives, requirements files), read-only
_UV = "/tmp/.ketch/uv"
_UV_CACHE = "/tmp/.ketch/uv-cache"
_CA = "/tmp/.ketch/ca-certificates.crt"
_CA_VARS = ("SSL_CERT_FILE", "PIP_CERT", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE")
BASE_PACKAGES = ("python3", "python3-venv", "python3-pip", "ca-certificates")

# Run a program as the image's USER: the numeric ids and groups come from the image's own
# /etc/passwd and /etc/group, as Docker resolves them.
_AS_USER = (
    'u=${1%%:*}; g=${1#*:}; [ "$g" = "$1" ] && g=$(id -g "$u" 2>/dev/null || echo 0); shift; '
    'if id "$u" >/dev/null 2>&1; then grp=--init-groups; '
    'HOME=$(getent passwd "$u" | cut -d: -f6); export HOME; else grp=--clear-groups; fi; '
    'exec setpriv --reuid="$u" --regid="$g" "$grp" -- "$@"'
)
# A COPY, run as root in the sandbox: unpack its archive (owned by root) at the destination
# ($1), then ADD's archives, then --chown ($2) / --chmod ($3) on exactly the copied paths.
# $4: one file copied to a path, renamed there, unless that path is a directory in the
# image, where Docker puts the file under its own name.
_COPY_SCRIPT = r"""
set -e
in=/tmp/.ketch/in
paths=$in/paths
mkdir -p "$1"
cd "$1"
if [ -n "$4" ] && [ -d "$4" ]; then cd "$4"; set -- "$1" "$2" "$3" ""; fi
if [ -n "$4" ]; then
    t=$(mktemp -d /tmp/.ketch/copy.XXXXXX)
    tar -xf "$in/copy.tar" -C "$t" --no-same-owner
    mv -f -T "$t"/* "$4"
    paths=$t.paths
    printf '%s\0' "$4" > "$paths"
else
    tar -xf "$in/copy.tar" --no-same-owner --no-overwrite-dir --keep-directory-symlink
fi
for a in "$in"/archive-*; do
    [ -e "$a" ] || continue
    tar -xf "$a" --no-overwrite-dir --keep-directory-symlink
done
if [ -n "$2" ]; then xargs -0 -r chown -h -- "$2" < "$paths"; fi
if [ -n "$3" ]; then xargs -0 -r chmod -- "$3" < "$paths"; fi
"""


@dataclass(frozen=True)
class ImageConfig:
    """What an image's containers start with, folded from ENV, WORKDIR, USER and friends."""

    env: Mapping[str, str] = field(default_factory=lambda: {"PATH": DEFAULT_PATH})
    workdir: str | None = None
    user: str | None = None
    shell: tuple[str, ...] = ("/bin/sh", "-c")
    entrypoint: tuple[str, ...] | None = None
    cmd: tuple[str, ...] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "env": dict(self.env),
            "workdir": self.workdir,
            "user": self.user,
            "shell": list(self.shell),
        }


@dataclass(frozen=True)
class RootfsImage:
    """A built root-filesystem image: its layers (base first) and its configuration.

    `layers` are relative to `root`, which is how they go into an overlay mount (see
    `mount_layers`); `layer_dirs` gives them as absolute paths. `python` is the
    interpreter's path inside the image.
    """

    key: str
    root: Path
    layers: tuple[str, ...]
    config: ImageConfig
    python: str = "/usr/bin/python3"

    @property
    def layer_dirs(self) -> tuple[Path, ...]:
        return tuple((self.root / rel).resolve() for rel in self.layers)

    @property
    def env(self) -> dict[str, str]:
        return dict(self.config.env)

    @property
    def workdir(self) -> str | None:
        return self.config.workdir

    def overlay_options(self, upper: Path | None = None, work: Path | None = None) -> str:
        """Mount options for the image, read-only unless given a scratch `upper`/`work`
        (both on one filesystem, `work` empty). Relative to `root`: mount from there."""
        return bwrap.overlay_options(
            list(reversed(self.layers)),
            None if upper is None else str(upper),
            None if work is None else str(work),
        )


def mount_layers(
    image: RootfsImage, target: Path, upper: Path | None = None, work: Path | None = None
) -> None:
    """Mount `image` on `target` in the caller's mount namespace: its layers read-only,
    and writes going to `upper` (a container's own scratch layer) when given."""
    bwrap.mount(image.overlay_options(upper, work), target, image.root)


@dataclass(frozen=True)
class Op:
    """One step of a root-filesystem build: a Dockerfile instruction and where it came from.

    `context` is where a COPY's sources live; `plan` is a COPY resolved already (files
    added with add_local_*); `inputs` are files (name, content) the step reads under
    /tmp/.ketch/in; `uv` binds the server's uv binary at /tmp/.ketch/uv.
    """

    instruction: Instruction
    origin: str
    context: Path | None = None
    plan: CopyPlan | None = None
    inputs: tuple[tuple[str, str], ...] = ()
    uv: bool = False
    # Lent only while the step runs, outside its key (a run_function step's secrets).
    extra: StepExtra | None = field(default=None, compare=False)
    # The GPUs the step runs holding (a function's `gpu=` request), part of its key.
    gpu: str | tuple[str, ...] | None = None

    def describe(self) -> str:
        shown = self.instruction.text or self.instruction.render()
        if len(shown) > 120:
            shown = shown[:117] + "..."
        return f"{shown} ({self.origin})"


class BaseSource(Protocol):
    """Where an image's bottom layer comes from. The Debian base is made by mmdebstrap;
    a registry image unpacked elsewhere comes in as a `DirectoryBase`."""

    @property
    def key(self) -> str: ...

    @property
    def description(self) -> str: ...

    @property
    def config(self) -> ImageConfig: ...

    def cached(self, cache: Path) -> bool:
        """Whether the base is ready without building anything."""
        ...

    async def ensure(self, cache: Path, log: LogFn) -> Path:
        """Return the base's root directory, making it first if need be."""
        ...


@dataclass(frozen=True)
class DirectoryBase:
    """A root filesystem produced elsewhere (for example an unpacked registry image)."""

    key: str
    root: Path
    description: str
    config: ImageConfig = field(default_factory=ImageConfig)

    def cached(self, cache: Path) -> bool:
        return True

    async def ensure(self, cache: Path, log: LogFn) -> Path:
        return self.root


@dataclass(frozen=True)
class DebianBase:
    """Debian `suite` with Python, venv, pip and CA certificates, made by mmdebstrap."""

    suite: str
    # minbase lacks apt's own configuration for installing packages later; apt is the
    # smallest variant that apt_install works on (measured: 24 s, 251 MB for bookworm).
    variant: str = "apt"
    packages: tuple[str, ...] = BASE_PACKAGES
    config: ImageConfig = field(default_factory=ImageConfig)
    # The image's interpreter: Debian's own, or one a later layer adds (add_python). Not
    # part of the key: the layer that adds it is keyed by what it copies.
    python: str = "/usr/bin/python3"

    @property
    def key(self) -> str:
        payload = ["debian", _FORMAT, self.suite, self.variant, sorted(self.packages)]
        return hashlib.sha256(json.dumps(payload).encode()).hexdigest()

    @property
    def description(self) -> str:
        return f"Debian {self.suite} base ({self.variant}, {', '.join(self.packages)})"

    def cached(self, cache: Path) -> bool:
        return (cache / "bases" / self.key[:_ID_LEN] / _OK).is_file()

    async def ensure(self, cache: Path, log: LogFn) -> Path:
        final = cache / "bases" / self.key[:_ID_LEN]
        if (final / _OK).is_file():
            return final / "root"
        final.parent.mkdir(parents=True, exist_ok=True)
        async with _locked(final.with_name(final.name + ".lock")):
            if (final / _OK).is_file():
                return final / "root"
            _clean_stale(final)
            tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{final.name}-", dir=final.parent))
            try:
                os.chmod(tmp, 0o755)
                (tmp / "root").mkdir()
                cmd = [
                    "mmdebstrap",
                    f"--variant={self.variant}",
                    f"--include={','.join(self.packages)}",
                    self.suite,
                    str(tmp / "root"),
                ]
                started = time.monotonic()
                await run_streaming(cmd, self.description, log, env=_host_env(), cwd=tmp)
                # bwrap binds the host's resolv.conf here; the mount point must exist,
                # or bwrap would create it in whichever layer is being built.
                (tmp / "root" / "etc" / "resolv.conf").touch()
                _write_meta(tmp, self.key, None, self.description, started)
                os.rename(tmp, final)
            finally:
                if tmp.exists():
                    shutil.rmtree(tmp, ignore_errors=True)
        return final / "root"


def rootfs_cache(home: Path) -> Path:
    """The cache directory: KETCH_ROOTFS_CACHE if set, else <KETCH_HOME>/rootfs."""
    env = os.environ.get("KETCH_ROOTFS_CACHE")
    return Path(env).expanduser() if env else home / "rootfs"


def _host_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "http_proxy", "https_proxy")}
    env.setdefault("PATH", DEFAULT_PATH)
    return env


def _host_ca_bundle() -> Path | None:
    value = os.environ.get("SSL_CERT_FILE")
    return Path(value) if value and Path(value).is_file() else None


def _clean_stale(final: Path) -> None:
    # Left by a build that was killed; we hold the lock, so nobody is using them.
    for stale in final.parent.glob(f".tmp-{final.name}-*"):
        shutil.rmtree(stale, ignore_errors=True)


def _write_meta(tmp: Path, key: str, parent: str | None, what: str, started: float) -> None:
    meta = {"key": key, "parent": parent, "step": what, "seconds": time.monotonic() - started}
    (tmp / "meta.json").write_text(json.dumps(meta), encoding="utf-8")
    # .ok goes in before the rename, so the rename alone publishes the layer.
    (tmp / _OK).write_text(key, encoding="utf-8")


@contextlib.asynccontextmanager
async def _locked(path: Path) -> AsyncIterator[None]:
    # Polled rather than blocking in a thread, so that a cancelled build lets go at once.
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                await asyncio.sleep(_LOCK_POLL)
        yield
    finally:
        os.close(fd)


def _canonical(obj: object) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def fold(config: ImageConfig, args: dict[str, str], instr: Instruction) -> ImageConfig:
    """Apply a metadata instruction to the configuration (`args` collects ARG values)."""
    if isinstance(instr, Env):
        return replace(config, env={**config.env, **dict(instr.vars)})
    if isinstance(instr, Workdir):
        base = config.workdir or "/"
        return replace(config, workdir=os.path.normpath(os.path.join(base, instr.path)))
    if isinstance(instr, User):
        return replace(config, user=instr.user)
    if isinstance(instr, Shell):
        return replace(config, shell=instr.argv)
    if isinstance(instr, Arg):
        if instr.value is not None:
            args[instr.name] = instr.value
        return config
    if isinstance(instr, Entrypoint | Cmd):
        argv = instr.argv if instr.argv is not None else (*config.shell, instr.command or "")
        if isinstance(instr, Entrypoint):
            return replace(config, entrypoint=argv, cmd=None)  # Docker resets CMD here
        return replace(config, cmd=argv)
    return config


# (a step's GPU request, the step in words, the build log) -> entered while the step runs:
# the environment and device binds of the GPUs it holds.
GpuLender = Callable[
    [str | tuple[str, ...], str, LogFn],
    contextlib.AbstractAsyncContextManager[tuple[dict[str, str], list[Bind]]],
]


class RootfsBuilder:
    """Builds a base plus a list of `Op`s into layers under `cache`; `gpus` lends the
    host's GPUs to steps that ask for them (None: such a step fails)."""

    def __init__(self, cache: Path, uv_bin: str) -> None:
        self.cache = Path(cache)
        self.uv_bin = uv_bin
        self.gpus: GpuLender | None = None

    def _gpu_lease(
        self, op: Op, log: LogFn
    ) -> contextlib.AbstractAsyncContextManager[tuple[dict[str, str], list[Bind]]]:
        if op.gpu is None:
            return contextlib.nullcontext(({}, []))
        if self.gpus is None:
            raise ImageBuildError(op.describe(), "", "this server lends no GPU to image builds")
        return self.gpus(op.gpu, op.describe(), log)

    async def build(
        self,
        base: BaseSource,
        ops: Sequence[Op],
        log: LogFn,
        on_config: Callable[[ImageConfig, dict[str, str]], None] | None = None,
        *,
        force: bool = False,
    ) -> RootfsImage:
        """Build (or find) every layer of the image and return it. `force` builds every
        layer again, replacing the cached one; the base is kept, as `docker build
        --no-cache` keeps its FROM image."""
        layers_dir = self.cache / "layers"
        layers_dir.mkdir(parents=True, exist_ok=True)
        n_layers = sum(isinstance(op.instruction, Run | Copy) for op in ops)
        log(f"==> rootfs image: {base.description}, {n_layers} layer(s) on top")
        log(f"==> [base] {base.description}" + (" (cached)" if base.cached(self.cache) else ""))
        root = await base.ensure(self.cache, log)
        lowers = [os.path.relpath(root, self.cache)]
        key = base.key
        config = base.config
        args: dict[str, str] = {}
        index = 0
        for op in ops:
            instr = op.instruction
            if not isinstance(instr, Run | Copy):
                config = fold(config, args, instr)
                if on_config is not None:
                    on_config(config, args)
                continue
            index += 1
            key, rel = await self._layer(
                key, lowers, op, config, dict(args), (index, n_layers), log, force
            )
            lowers.append(rel)
        return RootfsImage(key=key, root=self.cache, layers=tuple(lowers), config=config)

    async def _layer(
        self,
        parent: str,
        lowers: list[str],
        op: Op,
        config: ImageConfig,
        args: dict[str, str],
        position: tuple[int, int],
        log: LogFn,
        force: bool,
    ) -> tuple[str, str]:
        instr = op.instruction
        plan = op.plan
        if isinstance(instr, Copy) and plan is None:
            plan = resolve_copy(instr, op.context, config.workdir, op.origin)
        payload = {
            "format": _FORMAT,
            "parent": parent,
            "step": instr.to_dict(),
            "config": config.to_dict(),
            "args": args,
            "inputs": [list(i) for i in op.inputs],
            "uv": op.uv,
            "files": None if plan is None else plan.digest(),
        }
        if op.gpu is not None:
            payload["gpu"] = op.gpu  # only then: layers built without a GPU keep their keys
        key = hashlib.sha256(_canonical(payload).encode()).hexdigest()
        name = key[:_ID_LEN]
        final = self.cache / "layers" / name
        rel = f"layers/{name}/diff"
        head = f"==> [{position[0]}/{position[1]}] {op.describe()}"
        if not force and (final / _OK).is_file():
            log(f"{head} (cached)")
            return key, rel
        async with _locked(final.with_name(name + ".lock")):
            if not force and (final / _OK).is_file():
                log(f"{head} (cached)")
                return key, rel
            _clean_stale(final)
            log(head)
            tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{name}-", dir=final.parent))
            try:
                os.chmod(tmp, 0o755)
                for sub in ("diff", "work", "merged", "in"):
                    (tmp / sub).mkdir()
                started = time.monotonic()
                async with self._gpu_lease(op, log) as lent:
                    await self._run_step(op, plan, config, args, lowers, tmp, log, lent)
                # The overlay's work directory is only needed while mounted; /tmp/.ketch
                # holds only the mount points of the step's inputs.
                shutil.rmtree(tmp / "work", ignore_errors=True)
                shutil.rmtree(tmp / "diff" / "tmp" / ".ketch", ignore_errors=True)
                for sub in ("merged", "in"):
                    shutil.rmtree(tmp / sub, ignore_errors=True)
                _write_meta(tmp, key, parent, op.describe(), started)
                replace_published(tmp, final)
            finally:
                if tmp.exists():
                    shutil.rmtree(tmp, ignore_errors=True)
        return key, rel

    async def _run_step(
        self,
        op: Op,
        plan: CopyPlan | None,
        config: ImageConfig,
        args: dict[str, str],
        lowers: list[str],
        tmp: Path,
        log: LogFn,
        lent_gpus: tuple[dict[str, str], list[Bind]],
    ) -> None:
        instr = op.instruction
        inputs = tmp / "in"
        binds = [Bind(inputs, _IN), *lent_gpus[1]]
        for name, content in op.inputs:
            (inputs / name).write_text(content, encoding="utf-8")
        env = {"HOME": "/root", **args, **config.env}  # ENV shadows ARG, as in Docker
        env.update(lent_gpus[0])
        if op.extra is not None:
            lent_env, lent_binds = await asyncio.to_thread(op.extra.prepare)
            env.update(lent_env)
            binds.extend(lent_binds)
        ca = _host_ca_bundle()
        if ca is not None:
            # A server told to trust its own CA bundle (a TLS-inspecting proxy) lends it to
            # build steps, so pip, uv and curl inside reach the network as the host does.
            binds.append(Bind(ca, _CA))
            for name in _CA_VARS:
                env.setdefault(name, _CA)
        if isinstance(instr, Copy):
            assert plan is not None
            argv = await asyncio.to_thread(self._stage_copy, op, plan, inputs)
            # COPY writes as root whatever USER says, as in Docker; ownership is --chown's.
            sandbox = Sandbox(argv, {"PATH": DEFAULT_PATH}, "/", binds, tmpfs_tmp=False)
        else:
            assert isinstance(instr, Run)
            argv = (
                list(instr.argv) if instr.argv is not None else [*config.shell, instr.command or ""]
            )
            if op.uv:
                binds.append(Bind(Path(self.uv_bin), _UV))
                uv_cache = self.cache / "uv-cache"
                uv_cache.mkdir(exist_ok=True)
                binds.append(Bind(uv_cache, _UV_CACHE, writable=True))
                env.update(
                    UV_CACHE_DIR=_UV_CACHE,
                    UV_LINK_MODE="copy",  # the cache is on another filesystem than the layer
                    UV_PYTHON_DOWNLOADS="never",
                    UV_NO_PROGRESS="1",
                    NO_COLOR="1",
                )
            if config.user not in (None, "root", "0", "0:0", "root:root"):
                argv = ["/bin/sh", "-c", _AS_USER, "sh", str(config.user), *argv]
            sandbox = Sandbox(argv, env, config.workdir or "/", binds, tmpfs_tmp=False)
        options = bwrap.overlay_options(
            list(reversed(lowers)),
            os.path.relpath(tmp / "diff", self.cache),
            os.path.relpath(tmp / "work", self.cache),
        )
        cmd = bwrap.mount_command(
            options, tmp / "merged", bwrap.bwrap_argv(tmp / "merged", sandbox)
        )
        running = run_streaming(cmd, op.describe(), log, env=_host_env(), cwd=self.cache)
        await (running if op.extra is None else op.extra.run(running, op.describe()))

    @staticmethod
    def _stage_copy(op: Op, plan: CopyPlan, inputs: Path) -> list[str]:
        digest, _ = write_archive(plan, inputs / "copy.tar")
        if digest != plan.digest():
            raise ImageBuildError(
                op.describe(), "", "a source file changed while the image was being built"
            )
        paths = b"".join(e.rel.encode() + b"\0" for e in plan.entries if e.kind != "link")
        (inputs / "paths").write_bytes(paths)
        for i, archive in enumerate(plan.archives):
            shutil.copyfile(archive, inputs / f"archive-{i}")
        return [
            "/bin/sh",
            "-c",
            _COPY_SCRIPT,
            "sh",
            plan.dest_dir,
            plan.chown or "",
            plan.chmod or "",
            plan.rename or "",
        ]


def command_in_image(
    image: RootfsImage, argv: Sequence[str], scratch: Path, binds: Sequence[Bind] = ()
) -> list[str]:
    """The command line that runs `argv` in `image` with the image's env and workdir, its
    writes kept in `scratch` (a fresh directory). Run it with `image.root` as cwd."""
    for sub in ("upper", "work", "merged"):
        (scratch / sub).mkdir(parents=True, exist_ok=True)
    options = image.overlay_options(scratch / "upper", scratch / "work")
    sandbox = Sandbox(argv, image.env, image.workdir or "/", binds)
    merged = scratch / "merged"
    return bwrap.mount_command(options, merged, bwrap.bwrap_argv(merged, sandbox))
