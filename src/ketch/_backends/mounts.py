"""Volumes inside local containers: the volume's host directory at the mount path.

Preferred: the container runs in a mount namespace of its own (`unshare -m`, propagation
private) where the volume's directory is bind-mounted at the mount path. Nothing of the
mount is seen outside the container; a mount point that does not exist on the host is
created there as an empty directory (and left, like `mkdir -p`: removing it later could
unmount it in a container of another server that mounts the same path).

Fallback, where mount namespaces are not permitted (or `KETCH_VOLUME_MOUNT=symlink`): a
symlink at the mount path pointing at the volume's directory, made only if the path is free
(or already such a link). It is visible on the whole host, and two functions cannot map one
path to two volumes that way.

Either way the container finds `KETCH_VOLUME_MODE` (bind | symlink) and `KETCH_VOLUMES`
(JSON: mount path -> host directory) in its environment, and its log says which was used.
"""

from __future__ import annotations

import functools
import json
import os
import shlex
import shutil
import subprocess

_MODES = ("auto", "bind", "symlink")


@functools.cache
def _mount_namespace_works() -> bool:
    unshare = shutil.which("unshare")
    if unshare is None:
        return False
    argv = [unshare, "-m", "--propagation", "private", "true"]
    if os.geteuid() != 0:
        argv.insert(1, "-r")
    try:
        return subprocess.run(argv, capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def mount_mode() -> str:
    """bind or symlink: KETCH_VOLUME_MOUNT in the server's environment, else what works."""
    wanted = os.environ.get("KETCH_VOLUME_MOUNT", "auto").strip().lower() or "auto"
    if wanted not in _MODES:
        raise RuntimeError(f"KETCH_VOLUME_MOUNT={wanted!r}: expected one of {', '.join(_MODES)}")
    if wanted == "auto":
        return "bind" if _mount_namespace_works() else "symlink"
    if wanted == "bind" and not _mount_namespace_works():
        raise RuntimeError(
            "KETCH_VOLUME_MOUNT=bind, but mount namespaces are not permitted "
            "here (unshare -m failed); use auto or symlink"
        )
    return wanted


def volume_argv(volumes: dict[str, str], argv: list[str]) -> tuple[list[str], dict[str, str]]:
    """The container command wrapped so that `volumes` (mount path -> host directory) are
    in place when it starts, and the environment entries that describe them. Raises
    RuntimeError, saying why, when a volume cannot be put at its path."""
    mode = mount_mode()
    steps: list[str] = []
    # Outer paths first, so that a nested mount is not hidden by its parent's.
    for mount, host in sorted(volumes.items(), key=lambda kv: kv[0].count("/")):
        if not os.path.isdir(host):
            raise RuntimeError(f"the directory of the volume mounted at {mount} is missing")
        if mode == "bind":
            _mount_point(mount)
            steps.append(f"mount --bind {shlex.quote(host)} {shlex.quote(mount)}")
        else:
            _symlink(mount, host)
        note = f"ketch: volume at {mount}: " + (
            "bind mount in a private mount namespace"
            if mode == "bind"
            else f"symlink to {host} (no mount namespace here)"
        )
        steps.append(f"echo {shlex.quote(note)} >&2")
    script = " && ".join([*steps, 'exec "$0" "$@"'])
    wrapped = ["/bin/sh", "-c", script, *argv]
    if mode == "bind":
        unshare = shutil.which("unshare") or "unshare"
        prefix = [unshare, "-m", "--propagation", "private"]
        if os.geteuid() != 0:
            prefix.insert(1, "-r")
        wrapped = [*prefix, *wrapped]
    return wrapped, volume_env(mode, volumes)


def volume_env(mode: str, volumes: dict[str, str]) -> dict[str, str]:
    """What a container is told of its volumes: how they are mounted, and where."""
    return {"KETCH_VOLUME_MODE": mode, "KETCH_VOLUMES": json.dumps(volumes, sort_keys=True)}


def _mount_point(mount: str) -> None:
    if os.path.islink(mount) or (os.path.lexists(mount) and not os.path.isdir(mount)):
        # A bind mount follows a link: it would land wherever the link points.
        raise RuntimeError(
            f"cannot mount a volume at {mount}: a file or symlink is there on this host"
        )
    try:
        os.makedirs(mount, mode=0o755, exist_ok=True)
    except OSError as exc:
        raise RuntimeError(f"cannot create the mount point {mount} for a volume: {exc}") from exc


def _symlink(mount: str, host: str) -> None:
    if os.path.islink(mount) and os.readlink(mount) == host:
        return
    if os.path.lexists(mount):
        raise RuntimeError(
            f"cannot map a volume to {mount}: without a mount namespace ketch places a symlink "
            "there, and the path is taken on this host; choose a free mount path"
        )
    try:
        os.makedirs(os.path.dirname(mount), exist_ok=True)
        os.symlink(host, mount)
    except FileExistsError:
        if not (os.path.islink(mount) and os.readlink(mount) == host):
            raise RuntimeError(f"cannot map a volume to {mount}: the path was taken") from None
    except OSError as exc:
        raise RuntimeError(f"cannot map a volume to {mount}: {exc}") from exc
