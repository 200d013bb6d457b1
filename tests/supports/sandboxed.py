"""Functions that look around from inside their container (tests/integration/test_sandbox.py):
what of the server's state directory, the host's processes and filesystem they can reach."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import ketch

app = ketch.App("sandboxed")
other = ketch.App("sandboxed-other")

HERE = Path(__file__).resolve().parent
DATA = HERE / "sandbox_data"

image = (
    ketch.Image.debian_slim()
    .add_local_file(DATA / "note.txt", "/root/note.txt", copy=True)
    .add_local_dir(DATA / "assets", "/assets", copy=True)
    .add_local_file(DATA / "note.txt", "/srv/mounted/note.txt")
    .add_local_dir(DATA / "assets", "/root/mounted_assets")
)


def _try_read(path: str) -> str:
    try:
        with open(path, "rb") as fh:
            fh.read(1)
        return "read"
    except OSError as exc:
        return type(exc).__name__


@app.function()
def look(home: str, server_pid: int, other_sources: list[str]) -> dict[str, Any]:
    """What this container reaches of the server and of the host."""
    pids = sorted(int(p) for p in os.listdir("/proc") if p.isdigit())
    return {
        "token": _try_read(os.path.join(home, "token")),
        "secret_key": _try_read(os.path.join(home, "secret.key")),
        "store": _try_read(os.path.join(home, "ketch.db")),
        "server_json": _try_read(os.path.join(home, "server.json")),
        "other_sources": [_try_read(p) for p in other_sources],
        "server_seen": os.path.exists(f"/proc/{server_pid}/cmdline")
        and b"ketch._server" in Path(f"/proc/{server_pid}/cmdline").read_bytes(),
        "pids": pids,
        "env_token": os.environ.get("KETCH_TOKEN"),
    }


@app.function()
def unhide(home: str) -> dict[str, Any]:
    """Try to take away what covers the state directory (a mount), then read the token."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    unmounted = 0
    for _ in range(4):  # the cover may be several mounts deep
        if libc.umount2(home.encode(), 2) != 0:  # MNT_DETACH
            break
        unmounted += 1
    status = Path("/proc/self/status").read_text()
    effective = next(line.split()[1] for line in status.splitlines() if line.startswith("CapEff"))
    return {
        "unmounted": unmounted,
        "caps": int(effective, 16),
        "token": _try_read(os.path.join(home, "token")),
    }


@app.function()
def write_tmp(name: str) -> list[str]:
    Path("/tmp", name).write_text("mine")
    return sorted(os.listdir("/tmp"))


@app.function()
def list_tmp() -> list[str]:
    return sorted(os.listdir("/tmp"))


@app.function()
def scribble(path: str) -> str:
    """Try to change the image (a system directory); report what happened and what is there."""
    try:
        Path(path).write_text("changed")
        outcome = "written"
    except OSError as exc:
        outcome = type(exc).__name__
    return f"{outcome}:{Path(path).read_text() if Path(path).exists() else 'absent'}"


@app.function(image=image)
def placed() -> dict[str, Any]:
    """The image's files at the absolute paths the script gave them."""
    return {
        "/root/note.txt": Path("/root/note.txt").read_text(),
        "/assets": sorted(os.listdir("/assets")),
        "/srv/mounted/note.txt": Path("/srv/mounted/note.txt").read_text(),
        "/root/mounted_assets": sorted(os.listdir("/root/mounted_assets")),
        # The app's own source, where Modal puts it; and the working directory.
        "module": __file__,
        "cwd": os.getcwd(),
    }


@other.function()
def other_fn() -> str:
    return "other"
