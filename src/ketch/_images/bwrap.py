"""Commands that run a program inside a stack of image layers: a kernel overlay mount in a
private mount namespace, then bubblewrap with that overlay as `/`.

Shared by the builder (RUN and COPY steps) and by whatever runs containers on a built
root filesystem, so both see the same image the same way.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "DEFAULT_PATH",
    "MAX_MOUNT_OPTIONS",
    "Bind",
    "bwrap_argv",
    "mount_command",
    "overlay_options",
]

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# The kernel copies mount options into one page; a longer lowerdir list is cut off.
MAX_MOUNT_OPTIONS = 4000

# Mount the overlay (its options may name directories relative to the working directory,
# which keeps long layer stacks inside the page) and become the sandbox in the same process.
_MOUNT_THEN_EXEC = 'mount -t overlay overlay -o "$1" "$2" && shift 2 && exec "$@"'


@dataclass(frozen=True)
class Bind:
    """A host path shown inside the sandbox, under /tmp/.ketch: a build removes that
    directory (the mount points bwrap made) from the layer it writes."""

    source: Path
    target: str
    writable: bool = False
    # A device file (a GPU lent to a build step), bound with its device access.
    device: bool = False


@dataclass(frozen=True)
class Sandbox:
    """How one program runs on a merged image root."""

    argv: Sequence[str]
    env: Mapping[str, str]
    workdir: str = "/"
    binds: Sequence[Bind] = field(default_factory=tuple)
    # A fresh /tmp for containers; build steps keep the image's own /tmp, so that what a
    # RUN leaves there is in the layer, as in Docker.
    tmpfs_tmp: bool = True


def overlay_options(
    lowers: Sequence[str], upper: str | None = None, work: str | None = None
) -> str:
    """Overlay mount options: `lowers` top-most first; without `upper` the mount is read-only."""
    for path in (*lowers, upper or "", work or ""):
        if any(c in path for c in ",:"):
            raise ValueError(f"overlay layer path {path!r} may not contain ',' or ':'")
    opts = "lowerdir=" + ":".join(lowers)
    if upper is not None:
        if work is None:
            raise ValueError("an overlay upper directory needs a work directory")
        opts += f",upperdir={upper},workdir={work}"
    if len(opts) > MAX_MOUNT_OPTIONS:
        raise ValueError(f"{len(lowers)} layers are more than one overlay mount can stack")
    return opts


def bwrap_argv(merged: Path, sandbox: Sandbox) -> list[str]:
    """bubblewrap's command line: `merged` as /, fresh /proc, /dev and /tmp, the host's DNS
    settings, all capabilities (steps run as root), the host network, a clean environment."""
    argv = [
        "bwrap",
        "--bind", str(merged), "/",
        "--proc", "/proc",
        "--dev", "/dev",
        "--ro-bind", "/etc/resolv.conf", "/etc/resolv.conf",
        "--cap-add", "ALL",
        "--unshare-pid", "--unshare-ipc", "--unshare-uts",
        "--die-with-parent", "--new-session",
        "--clearenv",
    ]  # fmt: skip
    if sandbox.tmpfs_tmp:
        # apt drops privileges to _apt and needs a world-writable /tmp.
        argv += ["--perms", "1777", "--tmpfs", "/tmp"]
    for bind in sandbox.binds:
        flag = "--dev-bind" if bind.device else "--bind" if bind.writable else "--ro-bind"
        argv += [flag, str(bind.source), bind.target]
    for key, value in sandbox.env.items():
        argv += ["--setenv", key, value]
    if sandbox.workdir != "/":
        # Docker creates a missing WORKDIR; here it appears in the layer being written.
        argv += ["--dir", sandbox.workdir]
    argv += ["--chdir", sandbox.workdir, "--", *sandbox.argv]
    return argv


def mount_command(options: str, merged: Path, then: Sequence[str]) -> list[str]:
    """Mount the overlay on `merged` in a private mount namespace, then exec `then`.

    Run it with the working directory the options' relative paths start from.
    """
    return [
        "unshare", "--mount", "--propagation", "private", "--",
        "/bin/sh", "-c", _MOUNT_THEN_EXEC, "sh", options, str(merged), *then,
    ]  # fmt: skip


def mount(options: str, target: Path, cwd: Path) -> None:
    """Mount an overlay on `target` in the caller's mount namespace (needs root)."""
    subprocess.run(
        ["mount", "-t", "overlay", "overlay", "-o", options, str(target)],
        cwd=cwd,
        check=True,
        capture_output=True,
        env={"PATH": os.environ.get("PATH", DEFAULT_PATH)},
    )
