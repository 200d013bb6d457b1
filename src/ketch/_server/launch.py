"""What a container of a function is started with: its `ContainerSpec` for the backend, the
fork-server template it may be forked from, and the init message it loads its function
from. Pure functions of the function definition and the server's paths, so that they are
tested without a scheduler."""

from __future__ import annotations

import base64
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from ketch._backends.base import ContainerSpec, ForkSpec
from ketch._server.model import FunctionDef
from ketch._utils.protocol import messages as m
from ketch._utils.protocol.spec import ServerWeb


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
        "PATH": f"{fdef.image.python.parent}:/usr/local/bin:/usr/bin:/bin",
        "PYTHONPATH": runtime_core,
        "VIRTUAL_ENV": str(fdef.image.python.parent.parent),
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
) -> ContainerSpec:
    """What the backend starts: the image's Python in the function's directory, with the
    function's limits, GPUs, network and volumes."""
    cwd = Path(fdef.source_dir or fdef.image.root)
    if fdef.image.workdir and Path(fdef.image.workdir).is_dir():
        cwd = Path(fdef.image.workdir)
    options = fdef.options
    return ContainerSpec(
        container_id=cid,
        python=fdef.image.python,
        env=env,
        cwd=cwd,
        cpu=_limit_of(options.cpu),
        memory_mb=_mb_limit(options.memory),
        gpus=tuple(str(i) for i in gpus),
        block_network=options.block_network,
        isolate_network=isinstance(fdef.spec.web, ServerWeb),
        volumes=volumes,
        fork=fork_spec(fdef, params, runtime_web),
    )


def fork_spec(fdef: FunctionDef, params: bytes | None, runtime_web: str) -> ForkSpec:
    """What a fork-server template loads for containers of this pool."""
    snapshot = fdef.options.enable_memory_snapshot and fdef.spec.kind == "cls"
    # Parameters only matter to a template that builds the instance (a snapshot);
    # otherwise one template serves every parameter set.
    given = params if snapshot and params else None
    return ForkSpec(
        group=fork_group(fdef),
        preload={
            "function": fdef.container_wire,
            "sys_path": sys_path(fdef),
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
) -> dict[str, Any]:
    """The first frame a container gets (less the server's message limit, which the call
    server adds)."""
    return {
        "t": m.INIT,
        "function": fdef.container_wire,
        "params": params,
        "sys_path": sys_path(fdef),
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


def fork_group(fdef: FunctionDef) -> str:
    """The containers that one fork-server template may serve: a function at one version."""
    return f"{fdef.function_id}:{fdef.version}"


def sys_path(fdef: FunctionDef) -> list[str]:
    return [p for p in (fdef.source_dir, fdef.mount_dir, _copied_root(fdef)) if p]


def _copied_root(fdef: FunctionDef) -> str | None:
    """Files an image copied to /root at build time are importable, as on Modal."""
    root = fdef.image.root / "files" / "root"
    return str(root) if root.is_dir() else None


def _limit_of(value: float | list[float] | None) -> float | None:
    """cpu= as a number, or the limit of a (request, limit) pair."""
    if isinstance(value, list | tuple):
        return float(value[1])
    return None if value is None else float(value)


def _mb_limit(value: int | list[int] | None) -> int | None:
    """memory= in MiB, or the limit of a (request, limit) pair."""
    if isinstance(value, list | tuple):
        return int(value[1])
    return None if value is None else int(value)
