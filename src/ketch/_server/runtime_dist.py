"""Private copies of the Python packages that containers need from ketch itself.

Containers run in image environments that hold only what the user asked for. The ketch
runtime (ketch, cloudpickle, msgpack) goes first on their `PYTHONPATH`; the packages that
serve web functions (FastAPI, uvicorn, ...) are appended to `sys.path` by the runtime, so a
version the user installed in the image wins. Copies come from the server's own environment: no
network, and the versions match the server's exactly.
"""

from __future__ import annotations

import compileall
import hashlib
import importlib.metadata as md
import os
import re
import shutil
from pathlib import Path

import ketch

CORE = ("cloudpickle", "msgpack")  # msgpack: the call protocol's frames
WEB = ("fastapi", "uvicorn", "httptools", "websockets", "a2wsgi")


def _closure(roots: tuple[str, ...], exclude: set[str]) -> list[md.Distribution]:
    """The distributions `roots` need at run time, extras left out."""
    seen: dict[str, md.Distribution] = {}
    todo = list(roots)
    while todo:
        name = _norm(todo.pop())
        if name in seen or name in exclude:
            continue
        try:
            dist = md.distribution(name)
        except md.PackageNotFoundError:
            continue
        seen[name] = dist
        for req in dist.requires or []:
            if "extra ==" in req or "extra==" in req:
                continue
            if not _marker_ok(req):
                continue
            match = re.match(r"\s*([A-Za-z0-9._-]+)", req)
            if match:
                todo.append(match.group(1))
    return sorted(seen.values(), key=lambda d: _norm(d.metadata["Name"]))


def _marker_ok(req: str) -> bool:
    if ";" not in req:
        return True
    try:
        from packaging.requirements import Requirement
    except ImportError:
        return True
    marker = Requirement(req).marker
    return marker is None or bool(marker.evaluate({"extra": ""}))


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _copy_dists(dists: list[md.Distribution], dest: Path) -> None:
    for dist in dists:
        base = Path(str(dist.locate_file("")))
        for rel in dist.files or []:
            parts = Path(str(rel)).parts
            if not parts or parts[0] == ".." or "__pycache__" in parts:
                continue
            src = base / rel
            if src.is_file():
                target = dest / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, target)


def _ketch_files() -> list[Path]:
    src = Path(ketch.__file__).parent
    return sorted(
        p
        for p in src.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and p.suffix in (".py", ".typed")
    )


def install(home: Path) -> tuple[Path, Path]:
    """(core dir, web dir), built once per content under `home/runtime/`."""
    core_dists = _closure(CORE, set())
    web_dists = _closure(WEB, {_norm(d.metadata["Name"]) for d in core_dists})
    src = Path(ketch.__file__).parent
    digest = hashlib.sha256()
    for p in _ketch_files():
        digest.update(str(p.relative_to(src)).encode())
        digest.update(p.read_bytes())
    for d in core_dists + web_dists:
        digest.update(f"{d.metadata['Name']}=={d.version}".encode())
    root = home / "runtime" / digest.hexdigest()[:16]
    if not (root / ".ok").exists():
        tmp = root.with_name(root.name + f".tmp{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        for p in _ketch_files():
            target = tmp / "core" / "ketch" / p.relative_to(src)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(p, target)
        _copy_dists(core_dists, tmp / "core")
        _copy_dists(web_dists, tmp / "web")
        # Compiled now: sandboxed containers see this directory read-only, so a module
        # without its .pyc would be compiled again at every cold start.
        compileall.compile_dir(tmp, quiet=1, workers=0)
        (tmp / ".ok").touch()
        shutil.rmtree(root, ignore_errors=True)
        tmp.rename(root)
    return root / "core", root / "web"
