"""Containers under bubblewrap: what a container sees of the host (SPEC I3).

A sandboxed container gets the host's root filesystem read-only (a venv image; its files
belong to the host and no container may change them), with its own `/tmp`, a minimal
`/dev`, `/proc` of a pid namespace of its own (it sees only its own processes), and of the
server's state directory nothing but what it runs: its image's environment, its app's
source, the ketch runtime, its volumes and the sockets it talks on. The server token, the
secrets key, the store and other apps' sources stay out of reach.

An image with a root filesystem of its own (`SandboxSpec.root`, built by ketch._images) is
that filesystem instead of the host's: its layers, read-only, under an overlay whose
writable layer is a tmpfs of the container's own. bubblewrap 0.8 cannot stack overlays, so
the container starts in a private mount namespace (`unshare`) that mounts the tmpfs and the
overlay on one fixed, empty host directory (each namespace has its own mounts there) and
then becomes bwrap with that overlay as `/`. The mounts go with the namespace: nothing is
left to unmount when a container dies, however it dies, and a write to `/usr` is seen by
that container only.

Nothing here is copied or mounted by ketch itself: bwrap sets the namespaces up as it
starts the command, and everything it made goes with the container's last process.
`KETCH_SANDBOX` chooses: `auto` (the default: sandboxed where bwrap works), `require` (the
server does not start without it), `off` (venv images run as plain host processes).
"""

from __future__ import annotations

import functools
import glob
import os
import shutil
import subprocess
from dataclasses import dataclass, field

from ketch._images.bwrap import overlay_options

_MODES = ("auto", "require", "off")
INSTALL_HINT = (
    "containers are sandboxed with bubblewrap (Debian/Ubuntu: apt-get install bubblewrap; "
    "scripts/setup does this when run as root)"
)


@dataclass(frozen=True)
class ImageRoot:
    """A built root filesystem to run on: `layers` (bottom first) relative to `base`,
    which keeps a long stack within one mount's options, and `mount_point`, an empty host
    directory that each container mounts its own root on inside its own mount namespace."""

    base: str
    layers: tuple[str, ...]
    mount_point: str


@dataclass(frozen=True)
class SandboxSpec:
    """What one container may see; paths are the host's unless named as inside."""

    # Host directories replaced by an empty, private directory (the state directory, the
    # sockets directory): only the paths bound below show through them.
    hide: tuple[str, ...] = ()
    # (host path, path inside) bound read-only, then read-write, in this order.
    read_only: tuple[tuple[str, str], ...] = ()
    read_write: tuple[tuple[str, str], ...] = ()
    # The image's own root filesystem; None: the host's, read-only.
    root: ImageRoot | None = None
    # Device nodes passed through as they are (GPUs).
    devices: tuple[str, ...] = field(default_factory=tuple)


def mode() -> str:
    # Sandboxed wherever bwrap works: a host without it still runs venv images, as before.
    wanted = os.environ.get("KETCH_SANDBOX", "auto").strip().lower() or "auto"
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


def bwrap_for(sandbox: SandboxSpec | None, configured: str | None) -> str | None:
    """The bwrap a container runs under: the configured one when containers are sandboxed;
    for an image with a root filesystem of its own, bwrap even with KETCH_SANDBOX=off (it
    cannot run any other way), and an error naming the package when there is none."""
    if sandbox is None:
        return None
    if configured is not None or sandbox.root is None:
        return configured
    found = shutil.which("bwrap")
    if found is None:
        raise RuntimeError(
            "this function's image has a root filesystem of its own, which containers run "
            f"on under bubblewrap; {INSTALL_HINT}"
        )
    return found


def host_cwd(sandbox: SandboxSpec | None, cwd: str) -> str:
    """Where the host starts a container's first process: inside an image root, `cwd` is
    a path of the image's, not the host's."""
    return "/" if sandbox is not None and sandbox.root is not None else cwd


# In the container's new mount namespace: a tmpfs for its writable layer, the overlay
# on it, then bwrap. $1 is where the layer paths start, $2 the layers, $3 the mount point.
_MOUNT_ROOT = (
    'cd "$1" && mount -t tmpfs -o mode=0755 ketch-scratch "$3" '
    '&& mkdir "$3/upper" "$3/work" "$3/root" '
    '&& mount -t overlay overlay -o "$2,upperdir=$3/upper,workdir=$3/work" "$3/root" '
    '&& cd / && shift 3 && exec "$@"'
)


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


def share_env() -> dict[str, str]:
    """Tells code in a container which directories the operator shares with every
    container (the same variable, as the server has it), so it can find them."""
    shared = os.environ.get("KETCH_SANDBOX_SHARE")
    return {"KETCH_SANDBOX_SHARE": shared} if shared else {}


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
    # No capabilities: a container of a root server is root, and with CAP_SYS_ADMIN it
    # could unmount what covers the state directory and read the token beneath.
    out += ["--cap-drop", "ALL"]
    placed = [inside for _, inside in (*sandbox.read_only, *sandbox.read_write)]
    prefix: list[str] = []
    if sandbox.root is None:
        out += _host_root(placed, sandbox.hide)
    else:
        image = sandbox.root
        prefix = ["unshare", "--mount", "--propagation", "private", "--"]
        lowers = overlay_options(list(reversed(image.layers)))
        prefix += ["/bin/sh", "-c", _MOUNT_ROOT, "sh", image.base, lowers, image.mount_point]
        out += ["--bind", f"{image.mount_point}/root", "/"]
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
    if sandbox.root is not None:
        # Docker makes a WORKDIR that no later step filled; so does the writable layer.
        out += ["--dir", cwd]
    out += ["--chdir", cwd, "--", *argv]
    return prefix + out


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
