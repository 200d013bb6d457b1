"""Loading a user's app file or module for `ketch run | deploy`."""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import os
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
    entry: LocalEntrypoint | Function[..., Any] | Cls[Any] | None


def parse_ref(ref: str) -> tuple[str, str | None]:
    path, sep, name = ref.partition("::")
    return path, (name or None) if sep else None


def import_target(ref: str, *, is_module: bool = False) -> ModuleType:
    from ketch.compat.shim import install_modal_alias

    install_modal_alias()
    if is_module:
        # As `python -m` does: the current directory is where modules are looked up first
        # (the `ketch` console script would otherwise only see its own bin directory).
        cwd = os.getcwd()
        if cwd not in sys.path:
            sys.path.insert(0, cwd)
        return _import_module(ref, ref)
    path = Path(ref)
    if not path.exists():
        raise InvalidError(f"no such file: {ref}")
    if path.is_dir():
        path = path / "__init__.py"
        if not path.exists():
            raise InvalidError(f"{ref} is a directory without __init__.py; name a .py file")
    if path.suffix != ".py":
        raise InvalidError(f"{ref} is not a Python file (expected a .py file or -m module)")
    path = path.resolve()
    root, name = _module_name_for(path)
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    if "." in name or path.name == "__init__.py":
        # A file inside a package is imported as part of it, so that its relative and
        # absolute imports of sibling modules work here and in the containers alike.
        return _import_module(name, ref)
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise InvalidError(f"cannot load {ref}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException as exc:
        sys.modules.pop(name, None)
        raise _import_error(ref, exc) from exc
    return module


def _module_name_for(path: Path) -> tuple[Path, str]:
    """(folder to put on sys.path, dotted module name) for a .py file."""
    parts = [] if path.name == "__init__.py" else [path.stem]
    folder = path.parent
    while (folder / "__init__.py").exists():
        parts.insert(0, folder.name)
        folder = folder.parent
    if not parts or not all(p.isidentifier() for p in parts):
        # Not importable by name (e.g. `my-app.py`): load the file under its stem.
        return path.parent, path.stem
    return folder, ".".join(parts)


def _import_module(name: str, ref: str) -> ModuleType:
    try:
        return importlib.import_module(name)
    except BaseException as exc:
        raise _import_error(ref, exc) from exc


def _import_error(ref: str, exc: BaseException) -> BaseException:
    """One readable error for a user module that fails to import."""
    if isinstance(exc, SyntaxError):
        where = f"{_shown(exc.filename) if exc.filename else ref}:{exc.lineno}"
        return InvalidError(f"{where}: syntax error: {exc.msg}")
    if isinstance(exc, KeyboardInterrupt):
        return exc
    if isinstance(exc, InvalidError):
        # Misuse caught at decoration time: say where in the user's code it is.
        frame = _user_frame(exc)
        return type(exc)(f"{frame}: {exc}") if frame and type(exc) is InvalidError else exc
    if isinstance(exc, SystemExit):
        return InvalidError(f"importing {ref} called sys.exit({exc.code!r})")
    if (
        isinstance(exc, ModuleNotFoundError)
        and exc.name
        and (ref == exc.name or ref.startswith(exc.name + "."))
    ):
        return InvalidError(f"cannot import module {ref!r}: {exc}")
    return InvalidError(f"importing {ref} failed: {type(exc).__name__}: {exc}")


def _user_frame(exc: BaseException) -> str | None:
    """`file:line` of the innermost frame of `exc` outside ketch and importlib."""
    import traceback

    ketch_dir = str(Path(__file__).resolve().parent.parent)
    found = None
    for frame in traceback.extract_tb(exc.__traceback__):
        name = frame.filename
        if name.startswith("<") or str(Path(name).resolve()).startswith(ketch_dir):
            continue
        found = frame
    if found is None:
        return None
    return f"{_shown(found.filename)}:{found.lineno}"


def _shown(filename: str) -> str:
    """A path as the user would type it: relative to the current directory when inside it."""
    path = Path(filename)
    with contextlib.suppress(ValueError, OSError):
        return str(path.resolve().relative_to(Path.cwd()))
    return filename


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
