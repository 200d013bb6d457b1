"""A local container's `cpu=` and `memory=` limits (SPEC S8), with what this host allows.

In order of preference:

* **cgroup v1** (a writable ``memory`` / ``cpu`` hierarchy, as on hosts that mount one per
  controller): a group per container under the server's own group, ``memory.limit_in_bytes``
  (and ``memory.memsw.limit_in_bytes`` where swap is accounted, so it cannot spill to
  swap), ``cpu.cfs_quota_us`` over ``cpu.cfs_period_us``. The kernel's OOM killer ends a
  container over its limit; ``memory.oom_control`` says it did.
* **cgroup v2** (a unified hierarchy where the server may create a child with the
  ``memory`` and ``cpu`` controllers): ``memory.max``, ``memory.swap.max = 0``, ``cpu.max``;
  ``memory.events`` counts OOM kills.
* **rlimit**: ``RLIMIT_DATA`` caps the heap (allocation past it raises ``MemoryError`` in
  the container rather than killing it); CPU is not limited this way.

The container joins its groups (or sets its limit) in a tiny shell that then ``exec``s the
runtime, so that the runtime and everything it starts are limited from their first
instruction. Groups are removed when the container has exited.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

_CPU_PERIOD_US = 100_000
_MiB = 2**20


@dataclass(frozen=True)
class Mounts:
    """Where this host's cgroup controllers are, and the server's place in them."""

    v1: dict[str, Path] = field(default_factory=dict)  # controller -> its group directory
    v2: Path | None = None  # the server's group in the unified hierarchy


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def find_mounts(proc: Path = Path("/proc/self")) -> Mounts:
    """The server's own group per controller, from /proc/self/mountinfo and cgroup."""
    own: dict[str, str] = {}
    for line in _read(proc / "cgroup").splitlines():
        parts = line.split(":", 2)
        if len(parts) == 3:
            for ctrl in parts[1].split(",") if parts[1] else [""]:
                own[ctrl] = parts[2]
    v1: dict[str, Path] = {}
    v2: Path | None = None
    for line in _read(proc / "mountinfo").splitlines():
        left, _, right = line.partition(" - ")
        fields, rfields = left.split(), right.split()
        if len(fields) < 5 or len(rfields) < 3:
            continue
        root, mount_point, fstype, opts = fields[3], Path(fields[4]), rfields[0], rfields[2]
        if fstype == "cgroup":
            for ctrl in ("memory", "cpu"):
                if ctrl in opts.split(",") and ctrl in own:
                    v1[ctrl] = _inside(mount_point, root, own[ctrl])
        elif fstype == "cgroup2" and "" in own:
            v2 = _inside(mount_point, root, own[""])
    return Mounts(v1, v2)


def _inside(mount_point: Path, root: str, group: str) -> Path:
    """The directory of `group` under a mount of the hierarchy's `root`."""
    rel = os.path.relpath(group, root) if group.startswith(root) else group.lstrip("/")
    path = (mount_point / rel).resolve() if rel != "." else mount_point
    # A group path that this mount namespace cannot see: fall back to the mount's top.
    return path if path.is_dir() else mount_point


@dataclass
class Limits:
    """The limits of one container, and how they are applied."""

    container_id: str
    cpu: float | None
    memory_mb: int | None
    mechanism: str = "none"  # "cgroup v1" | "cgroup v2" | "rlimit" | "none"
    groups: list[Path] = field(default_factory=list)
    memory_group: Path | None = None
    notes: list[str] = field(default_factory=list)

    def describe(self) -> str:
        wanted = []
        if self.memory_mb is not None:
            wanted.append(f"memory {self.memory_mb} MiB")
        if self.cpu is not None:
            wanted.append(f"cpu {self.cpu:g}")
        text = f"resource limits: {', '.join(wanted)} enforced with {self.mechanism}"
        return text + (f" ({'; '.join(self.notes)})" if self.notes else "")

    def wrap(self, argv: list[str]) -> list[str]:
        """The command, started so that it runs inside its limits."""
        if self.mechanism.startswith("cgroup"):
            joins = " && ".join(
                f"echo $$ > {shlex.quote(str(g / 'cgroup.procs'))}" for g in self.groups
            )
            return ["/bin/sh", "-c", f'{joins} && exec "$0" "$@"', *argv]
        if self.mechanism == "rlimit" and self.memory_mb is not None:
            kib = self.memory_mb * 1024
            return ["/bin/sh", "-c", f'ulimit -d {kib} && exec "$0" "$@"', *argv]
        return argv

    def oom_killed(self) -> bool:
        """Whether the kernel killed a process of the container for memory."""
        group = self.memory_group
        if group is None:
            return False
        for name in ("memory.oom_control", "memory.events"):
            for line in _read(group / name).splitlines():
                key, _, value = line.partition(" ")
                if key == "oom_kill" and value.strip().isdigit() and int(value) > 0:
                    return True
        return False

    def cleanup(self) -> None:
        """Remove the container's groups (killing anything of it still inside)."""
        for group in self.groups:
            for _ in range(50):
                try:
                    group.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    for pid in _read(group / "cgroup.procs").split():
                        with contextlib.suppress(ProcessLookupError, PermissionError, ValueError):
                            os.kill(int(pid), signal.SIGKILL)
                    time.sleep(0.02)
        self.groups = []


def prepare(
    container_id: str, cpu: float | None, memory_mb: int | None, mounts: Mounts | None = None
) -> Limits | None:
    """Set up the limits of one container; None when it asks for none."""
    if cpu is None and memory_mb is None:
        return None
    lim = Limits(container_id, cpu, memory_mb)
    mounts = find_mounts() if mounts is None else mounts
    name = f"ketch-{container_id}"
    if mounts.v1 and _setup_v1(lim, mounts, name):
        return lim
    if mounts.v2 is not None and _setup_v2(lim, mounts.v2, name):
        return lim
    lim.cleanup()
    if memory_mb is not None:
        lim.mechanism = "rlimit"
        lim.notes.append("RLIMIT_DATA: allocations past it raise MemoryError")
    if cpu is not None:
        lim.notes.append("cpu not limited: no writable cgroup cpu controller")
    return lim


def _write(path: Path, value: str) -> None:
    path.write_text(value)


def _setup_v1(lim: Limits, mounts: Mounts, name: str) -> bool:
    wanted = [("memory", lim.memory_mb), ("cpu", lim.cpu)]
    try:
        for ctrl, value in wanted:
            if value is None:
                continue
            parent = mounts.v1.get(ctrl)
            if parent is None:
                raise OSError(f"no {ctrl} controller")
            group = parent / name
            group.mkdir(exist_ok=True)
            lim.groups.append(group)
            if ctrl == "memory":
                limit = str(int(value) * _MiB)
                _write(group / "memory.limit_in_bytes", limit)
                if (group / "memory.memsw.limit_in_bytes").exists():
                    with contextlib.suppress(OSError):  # swap accounting may be off
                        _write(group / "memory.memsw.limit_in_bytes", limit)
                lim.memory_group = group
            else:
                _write(group / "cpu.cfs_period_us", str(_CPU_PERIOD_US))
                quota = max(1000, int(float(value) * _CPU_PERIOD_US))
                _write(group / "cpu.cfs_quota_us", str(quota))
    except OSError:
        lim.cleanup()
        lim.memory_group = None
        return False
    lim.mechanism = "cgroup v1"
    return True


def _setup_v2(lim: Limits, parent: Path, name: str) -> bool:
    need = {"memory"} if lim.memory_mb is not None else set()
    if lim.cpu is not None:
        need.add("cpu")
    try:
        enabled = set(_read(parent / "cgroup.subtree_control").split())
        missing = need - enabled
        if missing:
            # Fails (EBUSY) when the server's own group holds processes: then no v2 here.
            _write(parent / "cgroup.subtree_control", " ".join(f"+{c}" for c in missing))
        group = parent / name
        group.mkdir(exist_ok=True)
        lim.groups.append(group)
        if lim.memory_mb is not None:
            _write(group / "memory.max", str(lim.memory_mb * _MiB))
            with contextlib.suppress(OSError):
                _write(group / "memory.swap.max", "0")
            lim.memory_group = group
        if lim.cpu is not None:
            quota = max(1000, int(lim.cpu * _CPU_PERIOD_US))
            _write(group / "cpu.max", f"{quota} {_CPU_PERIOD_US}")
    except OSError:
        lim.cleanup()
        lim.memory_group = None
        return False
    lim.mechanism = "cgroup v2"
    return True
