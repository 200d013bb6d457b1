"""Turning an App into the body the server deploys: functions, images, secrets, source.

Part of the SDK (it reads the App it describes); `ketch._client.deploy` only sends it.
"""

from __future__ import annotations

import base64
import dataclasses
import io
import sys
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ketch._client.deploy import deploy_spec
from ketch._utils.payload import dumps_by_value
from ketch.config import Config
from ketch.exception import InvalidError

if TYPE_CHECKING:
    from ketch.app import App

Log = Callable[[str], None]


def module_name_of(obj: Any) -> str:
    """The name a container imports the object's module under."""
    mod = getattr(obj, "__module__", None) or "__main__"
    if mod == "__main__":
        main = sys.modules.get("__main__")
        spec = getattr(main, "__spec__", None)
        if spec is not None and spec.name and not spec.name.startswith("__main__"):
            return str(spec.name)  # `python -m pkg.module`: importable under its real name
        path = getattr(main, "__file__", None)
        if not path:
            raise InvalidError(
                f"{getattr(obj, '__qualname__', obj)} is defined in an interactive session; "
                "use serialized=True or define it in a file"
            )
        return Path(path).stem
    return mod


def _source_roots(app: App) -> list[tuple[Path, str]]:
    """(path on disk, name in the archive) of each module or top-level package to ship."""
    roots: dict[str, tuple[Path, str]] = {}
    for obj in app._raw_objects().values():
        mod_name = getattr(obj, "__module__", "__main__")
        module = sys.modules.get(mod_name)
        path = getattr(module, "__file__", None)
        if not path:
            continue
        file = Path(path).resolve()
        top = module_name_of(obj).split(".")[0]
        if "." in module_name_of(obj) or file.name == "__init__.py":
            pkg = file.parent
            while (pkg.parent / "__init__.py").exists():
                pkg = pkg.parent
            roots[top] = (pkg, pkg.name)
        else:
            roots[top] = (file, f"{top}.py")
    return sorted(roots.values(), key=lambda r: r[1])


def pack_source(app: App) -> bytes | None:
    roots = _source_roots(app)
    if not roots:
        return None
    buf = io.BytesIO()

    def clean(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
        if "__pycache__" in info.name or info.name.endswith(".pyc"):
            return None
        info.mtime = 0  # identical sources give identical archives (and one blob)
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        return info

    with tarfile.open(fileobj=buf, mode="w:gz", compresslevel=1) as tar:
        for path, arcname in roots:
            tar.add(path, arcname=arcname, filter=clean)
    return buf.getvalue()


def options_spec(opts: Any) -> dict[str, Any]:
    retries = opts.retries
    return {
        "timeout": opts.timeout,
        "startup_timeout": opts.startup_timeout,
        "retries": None if retries is None else dataclasses.asdict(retries),
        "min_containers": opts.min_containers,
        "max_containers": opts.max_containers,
        "buffer_containers": opts.buffer_containers,
        "scaledown_window": opts.scaledown_window,
        "max_inputs": opts.max_inputs,
        "target_inputs": opts.target_inputs,
        "batch_max_size": opts.batch_max_size,
        "batch_wait_ms": opts.batch_wait_ms,
        "gpu": opts.gpu,
        "cpu": opts.cpu,
        "memory": opts.memory,
        "block_network": opts.block_network,
        "enable_memory_snapshot": opts.enable_memory_snapshot,
        "inputs_per_container": opts.inputs_per_container,
        "schedule": None if opts.schedule is None else opts.schedule.spec(),
    }


def app_spec(app: App, *, name: str, environment: str, ephemeral: bool) -> dict[str, Any]:
    from ketch.cls import Cls, class_methods, declared_parameters
    from ketch.secret import Secret
    from ketch.volume import volume_mounts

    functions: dict[str, dict[str, Any]] = {}
    for tag, handle in app._handles().items():
        opts = handle._options
        raw = app._raw_objects()[tag]
        image = opts.image or app.image
        secrets = list(app._secrets) + list(opts.secrets)
        if opts.env:
            secrets.append(Secret.from_dict(opts.env))
        spec: dict[str, Any] = {
            "tag": tag,
            "kind": "cls" if isinstance(handle, Cls) else "function",
            "module": None if opts.serialized else module_name_of(raw),
            "qualname": getattr(raw, "__qualname__", tag),
            "serialized": base64.b64encode(_pickle_by_value(raw)).decode()
            if opts.serialized
            else None,
            "options": options_spec(opts),
            "image": image.spec(),
            "secrets": [s.spec() for s in secrets],
            "volumes": volume_mounts(tag, app._volumes, opts.volumes),
            "is_generator": opts.is_generator,
            "web": getattr(handle, "_web", None),
        }
        cls_web = getattr(handle, "_cls_web", None)
        if cls_web is not None:
            from ketch.cls import parameter_types

            spec["kind"] = "cls"
            spec["web_method"] = cls_web[1]
            spec["params"] = sorted(declared_parameters(raw))
            spec["param_types"] = parameter_types(raw)
        if isinstance(handle, Cls):
            spec["methods"] = class_methods(raw)
            spec["params"] = sorted(declared_parameters(raw))
        functions[tag] = spec
    return {
        "name": name,
        "environment": environment,
        "ephemeral": ephemeral,
        "functions": functions,
    }


def _pickle_by_value(obj: Any) -> bytes:
    return dumps_by_value(obj)


async def deploy_app(
    app: App,
    *,
    name: str,
    environment: str,
    ephemeral: bool,
    log: Log,
    config: Config | None = None,
    app_id: str | None = None,
) -> dict[str, Any]:
    """Deploy `app`; with `app_id`, as a new version of that running ephemeral app."""
    spec = app_spec(app, name=name, environment=environment, ephemeral=ephemeral)
    if app_id is not None:
        spec["app_id"] = app_id
    source = pack_source(app) if app._include_source else None
    result = await deploy_spec(spec, source, log, config)
    app._set_deployed(result)
    return result
