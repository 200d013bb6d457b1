"""The server's image builder: turns an image spec into a cached uv environment, or (for
steps that need one) a layered Debian root filesystem built by ketch._images."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import hashlib
import json
import os
import shlex
import shutil
import tempfile
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

import uv

from ketch._images import steps as rootfs_steps
from ketch._images.conda import CondaResources
from ketch._images.function_step import FunctionResources, StepExtra, VolumeLookup
from ketch._images.process import TAIL_LINES, ImageBuildError, LogFn, run_streaming
from ketch._images.pythons import PythonNotFound, find_python
from ketch._images.registry import RegistryBase
from ketch._images.rootfs import (
    BaseSource,
    DebianBase,
    Op,
    RootfsBuilder,
    RootfsImage,
    rootfs_cache,
)
from ketch._images.steps import describe_call, describe_files, describe_step
from ketch._images.swap import replace_published
from ketch.exception import InvalidError
from ketch.image import hash_build_spec, hash_file, hash_file_set, iter_local_files

if TYPE_CHECKING:
    from ketch._server.build_secrets import BuildSecrets
    from ketch._server.volumes import VolumeManager

__all__ = [
    "ROOTFS_RECORD",
    "BuiltImage",
    "ImageBuildError",
    "ImageBuilder",
    "mount_files",
    "volume_dir",
]

_TAIL_LINES = TAIL_LINES
_OK = ".ok"
# In <cache_dir>/<hash>/ for a root-filesystem image: its layer keys (see _record_rootfs).
ROOTFS_RECORD = "rootfs.json"

# A root-filesystem build needs these host tools; the Debian packages that have them.
_ROOTFS_TOOLS = {"mmdebstrap": "mmdebstrap", "bwrap": "bubblewrap", "unshare": "util-linux"}

_describe_call = describe_call
_describe_step = describe_step
_describe_files = describe_files
SecretLookup = Callable[[str | None, str], Mapping[str, str]]


@dataclass(frozen=True)
class BuiltImage:
    """A ready image environment: its interpreter, env vars, workdir and root directory.

    For a root-filesystem image `rootfs` holds its layers and configuration; `python` is
    then the interpreter's path inside the image and `root` its top layer's directory.
    """

    hash: str
    python: Path
    env: dict[str, str]
    workdir: str | None
    root: Path
    rootfs: RootfsImage | None = None


def _dest_for(files_root: Path, remote_path: str) -> Path:
    pure = PurePosixPath(remote_path)
    # The spec comes over the wire; never let a remote path escape the image's root.
    if not pure.is_absolute() or ".." in pure.parts:
        raise InvalidError(f"invalid remote path in image spec: {remote_path!r}")
    rel = pure.relative_to("/")
    return files_root.joinpath(*rel.parts)


def _copy_entry(entry: Mapping[str, Any], files_root: Path) -> None:
    """Copy one local file/dir entry of a spec under `files_root`, checking its hash."""
    src = Path(entry["local_path"])
    dest = _dest_for(files_root, entry["remote_path"])
    try:
        if entry["kind"] == "file":
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest)
            digest = hash_file(dest)
        else:
            copied: list[tuple[str, Path]] = []
            dest.mkdir(parents=True, exist_ok=True)
            for rel, path in iter_local_files(src, entry.get("ignore", ())):
                target = dest.joinpath(*rel.split("/"))
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, target)
                copied.append((rel, target))
            digest = hash_file_set(copied)
    except OSError as exc:
        raise ImageBuildError(_describe_files(entry), "", f"cannot copy {src}: {exc}") from exc
    if digest != entry["sha256"]:
        raise ImageBuildError(
            _describe_files(entry),
            "",
            f"{src} changed after the image was defined (its content hash no longer matches); "
            "deploy or run the app again to pick up the new content",
        )


def _mounts_key(entries: list[Mapping[str, Any]]) -> str:
    payload = [[e["remote_path"], e["kind"], e["sha256"]] for e in entries]
    return hashlib.sha256(json.dumps(payload, separators=(",", ":")).encode()).hexdigest()


def _replace_dir(tmp: Path, dest: Path, marker_content: str | None) -> None:
    """Rename `tmp` to `dest`; if `dest` exists and is not complete, replace it."""
    try:
        os.rename(tmp, dest)
        return
    except OSError:
        if not dest.exists():
            raise
    marker = dest / _OK
    if marker.is_file() and (
        marker_content is None or marker.read_text(encoding="utf-8") == marker_content
    ):
        # Someone else (another process) finished the same work first; theirs is as good.
        return
    trash = dest.with_name(f".{dest.name}.old-{uuid.uuid4().hex[:8]}")
    os.rename(dest, trash)
    os.rename(tmp, dest)
    shutil.rmtree(trash, ignore_errors=True)


def mount_files(spec: Mapping[str, Any], dest: Path) -> None:
    """Copy the copy=False files of `spec` into `dest/<remote path>` (used at container start).

    Does nothing when `dest/.ok` records the same set of file hashes. `dest` should belong
    to this set of files: a `dest` holding anything else is replaced as a whole.
    """
    entries = [f for f in spec.get("files", []) if not f["copy"]]
    key = _mounts_key(entries)
    marker = dest / _OK
    if marker.is_file() and marker.read_text(encoding="utf-8") == key:
        return
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.tmp-", dir=dest.parent))
    # mkdtemp makes the directory private; containers may run under another user.
    os.chmod(tmp, 0o755)
    try:
        for entry in entries:
            _copy_entry(entry, tmp)
        (tmp / _OK).write_text(key, encoding="utf-8")
        _replace_dir(tmp, dest, key)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def volume_dir(manager: VolumeManager, environment: str, ref: Mapping[str, Any]) -> Path:
    """A run_function step's volume reference resolved, created if the reference says so,
    as a function's volumes are at deploy."""
    if ref.get("volume_id"):
        return manager.live_path(str(ref["volume_id"]))
    env = ref.get("environment") or environment
    create = bool(ref.get("create_if_missing"))
    rec = manager.lookup(env, str(ref["name"]), create_if_missing=create)
    return manager.path(rec)


def _runtime_core(home: Path) -> Path:
    # The copy containers get (content-addressed, so usually made already at start).
    from ketch._server import runtime_dist

    return runtime_dist.install(home)[0]


class _Broadcast:
    """Fans build log lines out to every caller waiting on one shared build."""

    def __init__(self) -> None:
        self.listeners: list[LogFn] = []

    def __call__(self, line: str) -> None:
        for listener in list(self.listeners):
            try:
                listener(line)
            except Exception:
                # A broken listener (a gone client) must not fail a build others wait on.
                self.listeners.remove(listener)


class ImageBuilder:
    """Builds image specs: as uv virtual environments cached under `cache_dir/<hash>`, or,
    when a step needs a root filesystem (apt_install, run_commands, Dockerfile steps), as
    Debian layers in the root-filesystem cache (see ketch._images.rootfs)."""

    def __init__(
        self,
        cache_dir: Path,
        rootfs_dir: Path | None = None,
        bases: Mapping[str, rootfs_steps.BaseFactory] | None = None,
        secrets: SecretLookup | None = None,
        volumes: VolumeLookup | None = None,
        build_secrets: BuildSecrets | None = None,
    ) -> None:
        # ketch's own runtime is not installed into images: containers get it on their
        # PYTHONPATH (see runtime_dist), so an image stays valid across ketch upgrades.
        self.cache_dir = Path(cache_dir)
        self._uv = str(uv.find_uv_bin())
        self._inflight: dict[str, tuple[asyncio.Task[BuiltImage], _Broadcast]] = {}
        # The cache directory is <KETCH_HOME>/images, so its parent is the home.
        self.rootfs = RootfsBuilder(rootfs_dir or rootfs_cache(self.cache_dir.parent), self._uv)
        # Step type -> the base it starts from: the hook for images from a registry.
        self.bases: dict[str, rootfs_steps.BaseFactory] = dict(bases or {})
        # (environment or None, name) -> a stored secret's values, for registry logins
        # and run_function steps.
        self._secrets = secrets
        runtime = functools.partial(_runtime_core, self.cache_dir.parent)
        self.build_secrets = build_secrets
        sealed = None if build_secrets is None else build_secrets.values
        self._functions = FunctionResources(runtime, secrets, volumes, sealed)
        self._conda = CondaResources(self.rootfs.cache / "conda-pkgs")

    def _step_extra(self, step: Mapping[str, Any], origin: str, *, environment: str) -> StepExtra:
        # What a step is lent while it runs: a conda step rattler and its package cache,
        # a run_function step its secrets, volumes and ketch's runtime.
        if step["type"] in ("micromamba", "micromamba_install"):
            return self._conda.extra(step, origin)
        return self._functions.extra(step, origin, environment=environment)

    def _registry_base(self, step: Mapping[str, Any], app_environment: str) -> RegistryBase:
        # A secret named without an environment is the deploying app's, as for functions.
        name = step.get("secret")
        environment = step.get("secret_environment") or app_environment
        lookup = self._secrets

        def credentials() -> Mapping[str, str] | None:
            if name is None:
                return None
            if lookup is None:
                raise InvalidError(f"{describe_step(step)}: this server has no secrets to log in")
            return lookup(environment, str(name))

        return RegistryBase(
            str(step["ref"]),
            python_version=str(step["python_version"]),
            add_python=step.get("add_python"),
            secret_env=credentials,
            origin=describe_step(step),
        )

    async def build(
        self,
        spec: Mapping[str, Any],
        log: LogFn,
        *,
        force: bool = False,
        environment: str = "main",
    ) -> BuiltImage:
        """Return the built image for `spec`, building it first unless it is already cached
        (`force`: build it, and each of its root-filesystem layers, again all the same).

        Log lines of the build are passed to `log` as they are produced. Concurrent calls
        for the same image share a single build.
        """
        self._check_supported(spec)
        if self.build_secrets is not None:
            spec = self.build_secrets.seal(spec)  # a deploy sealed them already; a sandbox not
        image_hash = hash_build_spec(spec)
        rootfs = rootfs_steps.needs_rootfs(spec)
        root = self.cache_dir / image_hash
        if not rootfs and not force and (root / _OK).is_file():
            return self._built(image_hash, root, spec)

        # A forced build shares no build that may answer from the cache.
        key = f"{image_hash}:force" if force else image_hash
        inflight = self._inflight.get(key)
        if inflight is None:
            broadcast = _Broadcast()
            if rootfs:
                # Checked before any log line, so a refused image reports only its refusal.
                registry = functools.partial(self._registry_base, app_environment=environment)
                extras = functools.partial(self._step_extra, environment=environment)
                factories: dict[str, rootfs_steps.BaseFactory] = {
                    "from_registry": registry,
                    **self.bases,
                }
                base, ops = rootfs_steps.plan(spec, factories, extras)
                build = self._build_rootfs(image_hash, base, ops, broadcast, force)
            else:
                build = self._build_once(image_hash, spec, broadcast, force)
            task = asyncio.create_task(build)
            inflight = (task, broadcast)
            self._inflight[key] = inflight
            task.add_done_callback(lambda t: self._forget(key, t))
        task, broadcast = inflight
        broadcast.listeners.append(log)
        try:
            # Shielded: one caller giving up must not cancel a build others wait on.
            return await asyncio.shield(task)
        finally:
            with contextlib.suppress(ValueError):
                broadcast.listeners.remove(log)

    async def _build_rootfs(
        self,
        image_hash: str,
        base: BaseSource,
        ops: list[Op],
        log: LogFn,
        force: bool = False,
    ) -> BuiltImage:
        image = await self.rootfs.build(base, ops, log, force=force)
        if isinstance(base, RegistryBase | DebianBase):
            image = dataclasses.replace(image, python=base.python)
        await asyncio.to_thread(self._record_rootfs, image_hash, image)
        return BuiltImage(
            hash=image_hash,
            python=Path(image.python),
            env=image.env,
            workdir=image.workdir,
            root=image.layer_dirs[-1],
            rootfs=image,
        )

    @property
    def building(self) -> bool:
        """Whether a build is under way (removing images must wait for it to end)."""
        return bool(self._inflight)

    def _record_rootfs(self, image_hash: str, image: RootfsImage) -> None:
        """Note which layers the image is made of, for `ketch image list|rm|prune`: the
        layers live in a cache that is shared, and only this record ties them to it."""
        record = {"hash": image_hash, "key": image.key, "layers": list(image.layers)}
        path = self.cache_dir / image_hash / ROOTFS_RECORD
        with contextlib.suppress(OSError, ValueError):
            if json.loads(path.read_text(encoding="utf-8")) == record:
                return
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{ROOTFS_RECORD}.{uuid.uuid4().hex[:8]}")
        tmp.write_text(json.dumps(record), encoding="utf-8")
        tmp.replace(path)

    def _forget(self, key: str, task: asyncio.Task[BuiltImage]) -> None:
        current = self._inflight.get(key)
        if current is not None and current[0] is task:
            del self._inflight[key]
        if not task.cancelled():
            # Marks the exception as retrieved when every waiter was cancelled.
            task.exception()

    def _check_supported(self, spec: Mapping[str, Any]) -> None:
        known = {"pip_install", "uv_pip_install", "env", "workdir", *rootfs_steps.ROOTFS_STEPS}
        for step in spec.get("steps", []):
            kind = step.get("type")
            if kind not in known:
                raise InvalidError(f"unknown image step type {kind!r}")
        if not rootfs_steps.needs_rootfs(spec):
            return
        step = next(s for s in spec["steps"] if s["type"] in rootfs_steps.ROOTFS_STEPS)
        missing = [pkg for tool, pkg in _ROOTFS_TOOLS.items() if shutil.which(tool) is None]
        if missing:
            raise InvalidError(
                f"{_describe_step(step)} needs a root filesystem, which this server builds "
                f"with tools it lacks; install them (apt-get install {' '.join(missing)}) "
                "and restart the server"
            )
        if os.geteuid() != 0:
            raise InvalidError(
                f"{_describe_step(step)} needs a root filesystem, which only a server "
                "running as root can build (it mounts overlay layers); run the server as "
                "root or use pip_install/uv_pip_install instead"
            )

    def _built(self, image_hash: str, root: Path, spec: Mapping[str, Any]) -> BuiltImage:
        env: dict[str, str] = {}
        workdir: str | None = None
        for step in spec.get("steps", []):
            if step["type"] == "env":
                env.update(step["vars"])
            elif step["type"] == "workdir":
                workdir = step["path"]
        return BuiltImage(
            hash=image_hash,
            python=root / "venv" / "bin" / "python",
            env=env,
            workdir=workdir,
            root=root,
        )

    async def _build_once(
        self, image_hash: str, spec: Mapping[str, Any], log: LogFn, force: bool = False
    ) -> BuiltImage:
        root = self.cache_dir / image_hash
        if not force and (root / _OK).is_file():
            return self._built(image_hash, root, spec)
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        log(f"==> venv image {image_hash[:12]}: a uv environment on this machine's Python")
        tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{image_hash[:16]}-", dir=self.cache_dir))
        # mkdtemp makes the directory private; containers may run under another user.
        os.chmod(tmp, 0o755)
        try:
            await self._build_into(tmp, spec, log)
            marker = {
                "hash": image_hash,
                "python_version": spec["python_version"],
            }
            # .ok is written before the rename, so the rename alone publishes the image.
            (tmp / _OK).write_text(json.dumps(marker), encoding="utf-8")
            if force:
                await asyncio.to_thread(replace_published, tmp, root)
            else:
                await asyncio.to_thread(_replace_dir, tmp, root, None)
        finally:
            if tmp.exists():
                await asyncio.to_thread(shutil.rmtree, tmp, True)
        return self._built(image_hash, root, spec)

    def _subprocess_env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.pop("VIRTUAL_ENV", None)
        env.update(UV_PYTHON_DOWNLOADS="never", NO_COLOR="1", UV_NO_PROGRESS="1")
        return env

    async def _build_into(self, root: Path, spec: Mapping[str, Any], log: LogFn) -> None:
        version = str(spec["python_version"])
        interpreter = await self._find_python(version)
        venv = root / "venv"
        await self._run(
            [self._uv, "venv", "--relocatable", "--python", interpreter, str(venv)],
            _describe_call("debian_slim", [], {"python_version": version}),
            log,
        )
        python = venv / "bin" / "python"

        files = list(spec.get("files", []))
        steps = list(spec.get("steps", []))
        scratch = root / ".build"
        for index, step in enumerate([*steps, None]):
            for entry in files:
                if entry["copy"] and entry["position"] == index:
                    log(f"==> {_describe_files(entry)}")
                    await asyncio.to_thread(_copy_entry, entry, root / "files")
            if step is not None and step["type"] in ("pip_install", "uv_pip_install"):
                cmd = self._pip_command(python, step, scratch / f"step-{index}")
                await self._run(cmd, _describe_step(step), log)
        shutil.rmtree(scratch, ignore_errors=True)

    def _pip_command(self, python: Path, step: Mapping[str, Any], scratch: Path) -> list[str]:
        # Bytecode now: sandboxed containers see the environment read-only and would
        # otherwise compile what they import at every start.
        cmd = [self._uv, "pip", "install", "--compile-bytecode", "--python", str(python)]
        if step.get("index_url"):
            cmd += ["--index-url", step["index_url"]]
        if step.get("extra_index_url"):
            cmd += ["--extra-index-url", step["extra_index_url"]]
        if step.get("find_links"):
            cmd += ["--find-links", step["find_links"]]
        if step.get("pre"):
            cmd.append("--prerelease=allow")
        for i, req in enumerate(step.get("requirements", [])):
            scratch.mkdir(parents=True, exist_ok=True)
            req_file = scratch / f"requirements-{i}.txt"
            req_file.write_text(req["content"], encoding="utf-8")
            cmd += ["-r", str(req_file)]
        if step.get("extra_options"):
            cmd += shlex.split(step["extra_options"])
        cmd += list(step.get("packages", []))
        return cmd

    async def _find_python(self, version: str) -> str:
        try:
            return await find_python(self._uv, version, self._subprocess_env(), self.cache_dir)
        except PythonNotFound as exc:
            tail = "\n".join(exc.detail.splitlines()[-_TAIL_LINES:])
            raise ImageBuildError(
                _describe_call("debian_slim", [], {"python_version": version}), tail, str(exc)
            ) from None

    async def _run(self, cmd: list[str], description: str, log: LogFn) -> None:
        """Run one build command, streaming its output lines to `log` as they come."""
        log(f"==> {description}")
        await run_streaming(cmd, description, log, env=self._subprocess_env(), cwd=self.cache_dir)
