"""What a container of a function is started with: its `ContainerSpec` for the backend, the
fork-server template it may be forked from, and the init message it loads its function
from. Pure functions of the function definition and the server's paths, so that they are
tested without a scheduler."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from ketch._backends.base import ContainerSpec, ForkSpec
from ketch._backends.sandbox import ImageRoot, SandboxSpec, gpu_devices
from ketch._images.bwrap import DEFAULT_PATH
from ketch._images.rootfs import RootfsImage
from ketch._server.images import BuiltImage
from ketch._server.model import FunctionDef
from ketch._utils.protocol import messages as m
from ketch._utils.protocol.spec import ServerWeb

# Under a root-filesystem cache, the empty directory containers mount their roots on.
MOUNT_POINT = "mnt"


def user_env(fdef: FunctionDef, secrets: Mapping[str, str]) -> dict[str, str]:
    """The environment the user asked for: the image's, then its secrets, then the values
    of a pool's `with_options(secrets=[...])`, each winning over the one before."""
    env = dict(fdef.image.env)
    env.update(secrets)
    env.update(fdef.override_env)
    return env


def runtime_env(
    fdef: FunctionDef, cid: str, *, call_addr: str, token: str, runtime_core: str
) -> dict[str, str]:
    """What the ketch runtime inside the container needs: who it is, where to call home,
    and the image's Python first on its path."""
    return {
        "KETCH_CONTAINER_ID": cid,
        "KETCH_CALL_ADDR": call_addr,
        "KETCH_TOKEN": token,
        "KETCH_APP_ID": fdef.app_id,
        "KETCH_APP_NAME": fdef.app_name,
        "KETCH_ENVIRONMENT": fdef.environment,
        **_python_env(fdef),
        "PYTHONPATH": runtime_core,
    }


def _python_env(fdef: FunctionDef) -> dict[str, str]:
    return python_env(fdef.image)


def python_env(image: BuiltImage) -> dict[str, str]:
    """PATH (and VIRTUAL_ENV) that put the image's Python first."""
    if image.rootfs is not None:
        # The image's own PATH (its ENV, else Debian's): its Python is a system one.
        return {"PATH": image.env.get("PATH", DEFAULT_PATH)}
    return {
        "PATH": f"{image.python.parent}:/usr/local/bin:/usr/bin:/bin",
        "VIRTUAL_ENV": str(image.python.parent.parent),
    }


def container_spec(
    fdef: FunctionDef,
    cid: str,
    *,
    env: dict[str, str],
    gpus: tuple[int, ...],
    volumes: dict[str, str],
    params: bytes | None,
    runtime_web: str,
    sandbox: SandboxSpec | None = None,
    at_root: bool = False,
) -> ContainerSpec:
    """What the backend starts: the image's Python in the function's directory, with the
    function's limits, GPUs, network and volumes."""
    cwd = Path("/root" if at_root else fdef.source_dir or fdef.image.root)
    if fdef.image.rootfs is not None:
        # A path inside the image: the sandbox makes it if the image lacks it.
        cwd = Path(fdef.image.workdir or "/root")
    elif fdef.image.workdir and Path(fdef.image.workdir).is_dir():
        cwd = Path(fdef.image.workdir)
    options = fdef.options
    return ContainerSpec(
        container_id=cid,
        python=fdef.image.python,
        env=env,
        cwd=cwd,
        cpu=limit_of(options.cpu),
        memory_mb=mb_limit(options.memory),
        gpus=tuple(str(i) for i in gpus),
        block_network=options.block_network,
        isolate_network=isinstance(fdef.spec.web, ServerWeb),
        volumes=volumes,
        fork=fork_spec(fdef, params, runtime_web, at_root),
        sandbox=sandbox,
    )


def web_socket_dir(sockets_dir: Path, fdef: FunctionDef) -> Path:
    """Where the containers of one function put their web servers' sockets: a directory of
    their own, so that a sandbox shows a container its own function's sockets only."""
    digest = hashlib.sha256(fork_group(fdef).encode()).hexdigest()[:10]
    return sockets_dir / f"w-{digest}"  # short: a socket's path has at most 107 bytes


def sandbox_spec(
    fdef: FunctionDef,
    *,
    hide: Iterable[Path],
    sockets: Iterable[Path],
    runtime_paths: Iterable[str],
    web_dir: Path,
    volumes: Mapping[str, str],
    gpus: tuple[int, ...],
) -> SandboxSpec:
    """What a container of `fdef` sees of the server's files (SPEC I3): its image, its app's
    source and files, the ketch runtime, its volumes, its function's socket directory and
    the server's sockets; nothing else of the state directory."""
    read_write = [(host, inside) for inside, host in volumes.items()]
    read_write.append((str(web_dir), str(web_dir)))
    # The server's call socket, and its API socket (the SDK's volume calls go there).
    read_write += [(str(p), str(p)) for p in sockets if p.exists()]
    return image_sandbox(
        fdef.image,
        hide=hide,
        runtime_paths=runtime_paths,
        files_dir=fdef.files_dir,
        source_dir=fdef.source_dir,
        read_write=read_write,
        gpus=gpus,
    )


def image_sandbox(
    image: BuiltImage,
    *,
    hide: Iterable[Path],
    runtime_paths: Iterable[str],
    files_dir: str | None,
    source_dir: str | None,
    read_write: list[tuple[str, str]],
    gpus: tuple[int, ...] = (),
) -> SandboxSpec:
    """A sandbox on `image`: its root filesystem (or the host's, read-only, for a venv
    image) with the ketch runtime, the image's files at their paths, the app's source at
    /root, and `read_write` (host path, path inside) bound over it."""
    root = None if image.rootfs is None else _image_root(image.rootfs)
    # A root-filesystem image has its files in its layers; a venv image's are the host's.
    shown = [*runtime_paths] if root is not None else [str(image.root), *runtime_paths]
    shown += [p for p in (files_dir,) if p]
    read_only = [(p, p) for p in dict.fromkeys(shown) if Path(p).exists()]
    is_dir = _dir_in(image.rootfs) if image.rootfs is not None else Path.is_dir
    # The app's source at /root, Modal's place for it, beside what is there already.
    if source_dir and Path(source_dir).is_dir():
        read_only += _placed(Path(source_dir), Path("/root"), is_dir)
    # Files the image put at absolute paths (add_local_file(..., "/assets/x")), at them.
    tops = [Path(files_dir) if files_dir else None]
    tops += [image.root / "files"] if root is None else []
    for top in tops:
        if top is not None and top.is_dir():
            read_only += _placed(top, Path("/"), is_dir)
    return SandboxSpec(
        hide=tuple(str(p) for p in hide),
        read_only=tuple(read_only),
        read_write=tuple(read_write),
        root=root,
        devices=gpu_devices(tuple(str(i) for i in gpus)),
    )


def _image_root(image: RootfsImage) -> ImageRoot:
    # Each container mounts its root on this one directory, in a namespace of its own.
    return ImageRoot(str(image.root), image.layers, str(image.root / MOUNT_POINT))


def _dir_in(image: RootfsImage) -> Callable[[Path], bool]:
    """Whether a path is a directory in the image: in some layer, top-most first (a
    layer's whiteouts are not read; a directory deleted by a later step is rare)."""
    layers = list(reversed(image.layer_dirs))

    def is_dir(path: Path) -> bool:
        rel = path.relative_to("/")
        return any((layer / rel).is_dir() for layer in layers)

    return is_dir


def _placed(
    tree: Path, at: Path, is_dir: Callable[[Path], bool] = Path.is_dir
) -> list[tuple[str, str]]:
    """Binds that put the files under `tree` at the same paths under `at`: a path the host
    lacks is bound whole, a directory the host has is entered (its other entries stay the
    host's), a file the host has is bound over."""
    out: list[tuple[str, str]] = []
    for entry in sorted(tree.iterdir()):
        if entry.name.startswith("."):
            continue  # the builder's own markers (.ok)
        target = at / entry.name
        if entry.is_dir() and not entry.is_symlink() and is_dir(target):
            out += _placed(entry, target, is_dir)
        else:
            out.append((str(entry), str(target)))
    return out


def fork_spec(
    fdef: FunctionDef, params: bytes | None, runtime_web: str, at_root: bool = False
) -> ForkSpec:
    """What a fork-server template loads for containers of this pool."""
    snapshot = fdef.options.enable_memory_snapshot and fdef.spec.kind == "cls"
    # Parameters only matter to a template that builds the instance (a snapshot);
    # otherwise one template serves every parameter set.
    given = params if snapshot and params else None
    return ForkSpec(
        group=fork_group(fdef),
        preload={
            "function": fdef.container_wire,
            "sys_path": sys_path(fdef, at_root),
            "web_runtime": runtime_web,
            "params": base64.b64encode(given).decode() if given else None,
        },
        snapshot=snapshot,
        startup_timeout=float(fdef.options.effective_startup_timeout),
    )


def init_message(
    fdef: FunctionDef,
    params: bytes | None,
    *,
    runtime_web: str,
    web_socket: str,
    web_urls: dict[str, str],
    at_root: bool = False,
) -> dict[str, Any]:
    """The first frame a container gets (less the server's message limit, which the call
    server adds)."""
    return {
        "t": m.INIT,
        "function": fdef.container_wire,
        "params": params,
        "sys_path": sys_path(fdef, at_root),
        "web_runtime": runtime_web,
        "web_method": fdef.spec.web_method,
        "web_socket": web_socket,
        "web_urls": web_urls,
        "app_name": fdef.app_name,
        "app_id": fdef.app_id,
    }


def app_web_urls(fdef: FunctionDef, functions: Iterable[FunctionDef]) -> dict[str, str]:
    """The URLs of the web endpoints of `fdef`'s app, by function tag (`web_url()`)."""
    return {f.tag: f.spec.web_url for f in functions if f.app_id == fdef.app_id and f.spec.web_url}


def web_runtime_for(fdef: FunctionDef, functions: Iterable[FunctionDef], runtime_web: str) -> str:
    """The web runtime's path for `fdef`'s containers, or "" when they go without it: a
    module with endpoints often imports fastapi at its top (Modal's older images had it
    everywhere), so every function of an app with an endpoint gets it, after its image's
    own packages."""
    if fdef.spec.web is not None:
        return runtime_web
    has_web = any(f.app_id == fdef.app_id and f.spec.web is not None for f in functions)
    return runtime_web if has_web else ""


def fork_group(fdef: FunctionDef) -> str:
    """The containers that one fork-server template may serve: a function at one version."""
    return f"{fdef.function_id}:{fdef.version}"


def source_at_root(fdef: FunctionDef, sandboxed: bool) -> bool:
    """Whether containers of `fdef` find the app's source at /root: in a sandbox, which
    places it there; an image with a root filesystem of its own always runs in one."""
    return sandboxed or fdef.image.rootfs is not None


def sys_path(fdef: FunctionDef, at_root: bool = False) -> list[str]:
    if at_root:
        # The source, files placed under /root (copied or not) and the image's own /root.
        return ["/root"]
    return [p for p in (fdef.source_dir, fdef.mount_dir, _copied_root(fdef)) if p]


def _copied_root(fdef: FunctionDef) -> str | None:
    """Files an image copied to /root at build time are importable, as on Modal."""
    root = fdef.image.root / "files" / "root"
    return str(root) if root.is_dir() else None


def limit_of(value: float | list[float] | None) -> float | None:
    """cpu= as a number, or the limit of a (request, limit) pair."""
    if isinstance(value, list | tuple):
        return float(value[1])
    return None if value is None else float(value)


def mb_limit(value: int | list[int] | None) -> int | None:
    """memory= in MiB, or the limit of a (request, limit) pair."""
    if isinstance(value, list | tuple):
        return int(value[1])
    return None if value is None else int(value)
