"""Containers under bubblewrap: what a container sees of the host (SPEC I3).

A sandboxed container gets the host's root filesystem read-only (a venv image; its files
belong to the host and no container may change them), with its own `/tmp`, a minimal
`/dev`, `/proc` of a pid namespace of its own (it sees only its own processes), and of the
server's state directory nothing but what it runs: its image's environment, its app's
source, the ketch runtime, its volumes and the sockets it talks on. The server token, the
secrets key, the store and other apps' sources stay out of reach. An image with a root
filesystem of its own (`SandboxSpec.root`) is that filesystem instead of the host's.

Nothing here is copied or mounted by ketch itself: bwrap sets the namespaces up as it
starts the command, and everything it made goes with the container's last process.
`KETCH_SANDBOX` chooses: `auto` (sandboxed where bwrap is installed), `require` (the server
does not start without it), `off` (for now the default; see docs/architecture.md).
"""

from __future__ import annotations

import functools
import glob
import os
import shutil
import subprocess
from dataclasses import dataclass, field

_MODES = ("auto", "require", "off")
INSTALL_HINT = (
    "containers are sandboxed with bubblewrap (Debian/Ubuntu: apt-get install bubblewrap; "
    "scripts/setup does this when run as root)"
)


@dataclass(frozen=True)
class SandboxSpec:
    """What one container may see; paths are the host's unless named as inside."""

    # Host directories replaced by an empty, private directory (the state directory, the
    # sockets directory): only the paths bound below show through them.
    hide: tuple[str, ...] = ()
    # (host path, path inside) bound read-only, then read-write, in this order.
    read_only: tuple[tuple[str, str], ...] = ()
    read_write: tuple[tuple[str, str], ...] = ()
    # The container's own root filesystem (a merged image, writable scratch included);
    # None: the host's, read-only.
    root: str | None = None
    # Device nodes passed through as they are (GPUs).
    devices: tuple[str, ...] = field(default_factory=tuple)


def mode() -> str:
    # Off unless asked for, for now: part of the test suite still reads host pids of
    # containers (issue 13 says which); `auto` becomes the default once it does not.
    wanted = os.environ.get("KETCH_SANDBOX", "off").strip().lower() or "off"
    if wanted not in _MODES:
        raise RuntimeError(f"KETCH_SANDBOX={wanted!r}: expected one of {', '.join(_MODES)}")
    return wanted


@functools.cache
def _bwrap_works(bwrap: str) -> str | None:
    """None if bwrap can start a process here, else what it said."""
    try:
        done = subprocess.run(
            [bwrap, "--ro-bind", "/", "/", "--proc", "/proc", "--dev", "/dev", "true"],
            capture_output=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        return str(exc)
    return None if done.returncode == 0 else done.stderr.decode(errors="replace").strip()


def bwrap_path() -> str | None:
    """The bwrap to sandbox containers with, or None when they run unsandboxed (KETCH_SANDBOX
    =off, or auto without a working bwrap). Raises RuntimeError when `require` cannot be met."""
    chosen = mode()
    if chosen == "off":
        return None
    bwrap = shutil.which("bwrap")
    why = INSTALL_HINT if bwrap is None else _bwrap_works(bwrap)
    if why is None:
        return bwrap
    if chosen == "require":
        raise RuntimeError(f"KETCH_SANDBOX=require, but bwrap cannot sandbox here: {why}")
    return None


def shared_paths() -> list[str]:
    """Host directories every sandboxed container sees read-write at the same path
    (KETCH_SANDBOX_SHARE, separated by ':'): data the operator shares with all functions.
    The state directory is hidden even inside one of them."""
    raw = os.environ.get("KETCH_SANDBOX_SHARE", "")
    paths = [p for p in raw.split(":") if p]
    for path in paths:
        if not os.path.isabs(path) or not os.path.isdir(path):
            raise RuntimeError(
                f"KETCH_SANDBOX_SHARE: {path!r} is not an existing absolute directory"
            )
    return paths


def gpu_devices(indices: tuple[str, ...]) -> tuple[str, ...]:
    """The device nodes a container with these GPUs needs (NVIDIA's naming)."""
    if not indices:
        return ()
    shared = [
        p
        for p in glob.glob("/dev/nvidia*")
        if not p.removeprefix("/dev/nvidia").isdigit() and os.path.exists(p)
    ]
    own = [f"/dev/nvidia{i}" for i in indices if os.path.exists(f"/dev/nvidia{i}")]
    return tuple(sorted(shared) + own)


def wrap(bwrap: str, sandbox: SandboxSpec, argv: list[str], cwd: str) -> list[str]:
    """`argv` run inside the sandbox, in `cwd` (a path inside it)."""
    out = [bwrap, "--die-with-parent", "--unshare-pid", "--unshare-ipc"]
    placed = [inside for _, inside in (*sandbox.read_only, *sandbox.read_write)]
    if sandbox.root is None:
        out += _host_root(placed, sandbox.hide)
    else:
        out += ["--bind", sandbox.root, "/"]
        # The host's resolver settings, so that name lookups work as on the host.
        for path in ("/etc/resolv.conf", "/etc/hosts"):
            if os.path.exists(path):
                out += ["--ro-bind", path, path]
    out += ["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp", "--tmpfs", "/dev/shm"]
    # The operator's shared directories, before the hiding: a state directory inside one
    # stays hidden all the same.
    for path in shared_paths():
        out += ["--bind", path, path]
    for path in sandbox.hide:
        out += ["--tmpfs", path]
    for host, inside in sandbox.read_only:
        out += ["--ro-bind", host, inside]
    for host, inside in sandbox.read_write:
        out += ["--bind", host, inside]
    for dev in sandbox.devices:
        out += ["--dev-bind", dev, dev]
    out += ["--chdir", cwd, "--", *argv]
    return out


# Top-level host paths a container never sees as the host has them.
_OWN = frozenset({"/proc", "/dev", "/tmp", "/sys"})


def _host_root(placed: list[str], hide: tuple[str, ...]) -> list[str]:
    """The host's filesystem, read-only, on bwrap's empty root, such that every path in
    `placed` can be mounted: a file or directory the image puts where the host has none
    (`/assets`, `/root/app.py`) needs a writable parent, so each host directory on the way
    to it becomes an empty directory in which its own entries are bound one by one."""
    opened: set[str] = {"/"}
    for target in placed:
        parent = os.path.dirname(target.rstrip("/")) or "/"
        deepest = parent
        while deepest != "/" and not os.path.isdir(deepest):
            deepest = os.path.dirname(deepest)
        if os.path.lexists(target):
            continue  # an existing path is mounted over as it is
        step = deepest
        while step != "/":
            opened.add(step)
            step = os.path.dirname(step)
    out: list[str] = []
    for directory in sorted(opened, key=lambda p: (p.count("/"), p)):
        if directory != "/":
            out += ["--tmpfs", directory]
        try:
            names = sorted(os.listdir(directory))
        except OSError:
            continue
        for name in names:
            path = os.path.join(directory, name)
            if path in opened or path in _OWN or any(_under(path, h) for h in hide):
                continue
            kind = "--ro-bind" if not os.path.islink(path) else "--symlink"
            if kind == "--symlink":
                out += ["--symlink", os.readlink(path), path]
            else:
                out += ["--ro-bind", path, path]
    out += ["--ro-bind", "/sys", "/sys"] if os.path.isdir("/sys") else []
    return out


def _under(path: str, top: str) -> bool:
    return path == top or path.startswith(top.rstrip("/") + "/")
