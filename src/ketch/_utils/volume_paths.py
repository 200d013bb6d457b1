"""Rules for where a volume may be mounted in a container (checked by the SDK when a
function is declared, and again by the server at deploy)."""

from __future__ import annotations

from pathlib import PurePosixPath

from ketch.exception import InvalidError

# Paths a volume may not be mounted at or below: the container's operating system lives
# there, and hiding it would break the container (or, with the path-mapping fallback,
# write into the host's own system directories).
SYSTEM_DIRS = tuple(
    PurePosixPath(p)
    for p in (
        "/bin",
        "/boot",
        "/dev",
        "/etc",
        "/lib",
        "/lib32",
        "/lib64",
        "/libx32",
        "/proc",
        "/run",
        "/sbin",
        "/sys",
        "/usr",
        "/var/run",
        "/var/lib/dpkg",
    )
)


def check_mount_path(path: object) -> str:
    """The normalised mount path, or InvalidError saying why it cannot be one."""
    if not isinstance(path, str | PurePosixPath):
        raise InvalidError(f"volumes: mount paths must be strings, got {path!r}")
    text = str(path)
    p = PurePosixPath(text)
    if "\0" in text or not p.is_absolute() or ".." in p.parts or p == PurePosixPath("/"):
        raise InvalidError(
            f"volumes: {text!r} is not a usable mount path; use an absolute path below '/' "
            "without '..', e.g. '/data'"
        )
    for sysdir in SYSTEM_DIRS:
        if p == sysdir or sysdir in p.parents:
            raise InvalidError(
                f"volumes: {text!r} is under the system directory {sysdir}; mount volumes "
                "elsewhere, e.g. /data or /root/models"
            )
    return str(p)


def check_mount_set(paths: list[str]) -> None:
    """Mount paths of one function may not repeat or nest."""
    seen: list[PurePosixPath] = []
    for text in paths:
        p = PurePosixPath(text)
        for other in seen:
            if p == other:
                raise InvalidError(f"volumes: {text!r} is mounted twice")
            if other in p.parents or p in other.parents:
                raise InvalidError(
                    f"volumes: mount paths {str(other)!r} and {text!r} overlap; "
                    "use separate directories"
                )
        seen.append(p)
