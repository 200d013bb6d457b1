"""Loading a user's app file or module for `ketch run | deploy`."""

from __future__ import annotations

import importlib
import importlib.util
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from ketch.app import App, LocalEntrypoint
from ketch.cls import Cls
from ketch.exception import InvalidError
from ketch.functions import Function


@dataclass
class Target:
    module: ModuleType
    app: App
    entry: LocalEntrypoint | Function | Cls | None


def parse_ref(ref: str) -> tuple[str, str | None]:
    path, sep, name = ref.partition("::")
    return path, (name or None) if sep else None


def import_target(ref: str, *, is_module: bool = False) -> ModuleType:
    from ketch.compat.shim import install_modal_alias

    install_modal_alias()
    if is_module:
        try:
            return importlib.import_module(ref)
        except ImportError as exc:
            raise InvalidError(f"cannot import module {ref!r}: {exc}") from exc
    path = Path(ref)
    if not path.exists():
        raise InvalidError(f"no such file: {ref}")
    if path.is_dir():
        path = path / "__init__.py"
    if path.suffix != ".py":
        raise InvalidError(f"{ref} is not a Python file (expected a .py file or -m module)")
    path = path.resolve()
    folder = str(path.parent)
    if folder not in sys.path:
        sys.path.insert(0, folder)
    name = path.stem
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise InvalidError(f"cannot load {ref}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except SyntaxError as exc:
        raise InvalidError(f"{ref}:{exc.lineno}: syntax error: {exc.msg}") from exc
    except InvalidError:
        raise
    except Exception as exc:
        raise InvalidError(f"importing {ref} failed: {type(exc).__name__}: {exc}") from exc
    return module


def find_target(module: ModuleType, name: str | None, *, need_entry: bool) -> Target:
    apps = {k: v for k, v in vars(module).items() if isinstance(v, App)}
    if not apps:
        raise InvalidError(f"{module.__name__} defines no ketch App (app = ketch.App(...))")
    app_name, _, obj_name = (name or "").rpartition(".")
    if name and name in apps:
        app_name, obj_name = name, ""
    if app_name:
        if app_name not in apps:
            raise InvalidError(f"{module.__name__} has no App named {app_name!r}")
        app = apps[app_name]
    elif len(apps) == 1:
        app = next(iter(apps.values()))
    else:
        chosen = [a for a in apps.values() if obj_name and obj_name in _entries(a)]
        if len(chosen) != 1:
            raise InvalidError(
                f"{module.__name__} defines several apps ({', '.join(sorted(apps))}); "
                "pick one with file.py::app"
            )
        app = chosen[0]
    entries = _entries(app)
    if obj_name:
        if obj_name not in entries:
            raise InvalidError(
                f"{obj_name!r} is not a local entrypoint or function of the app; choose from: "
                + (", ".join(sorted(entries)) or "(none)")
            )
        return Target(module, app, entries[obj_name])
    if not need_entry:
        return Target(module, app, None)
    if len(app.registered_entrypoints) == 1:
        return Target(module, app, next(iter(app.registered_entrypoints.values())))
    if not app.registered_entrypoints and len(app.registered_functions) == 1:
        return Target(module, app, next(iter(app.registered_functions.values())))
    raise InvalidError(
        "say what to run with file.py::name; choose from: " + ", ".join(sorted(entries))
    )


def _entries(app: App) -> dict[str, Any]:
    return {**app.registered_functions, **app.registered_entrypoints}
