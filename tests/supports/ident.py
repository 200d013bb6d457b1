"""Process identities that survive pid namespaces (this is not an app).

A sandboxed container runs in a pid namespace of its own, where `os.getpid()` is a small
namespace-local number (2, 3, ...) that means nothing on the host and repeats from one
container to the next. `me()` names the calling process by its pid namespace, its pid in
that namespace and its start time, `pid:[<namespace inode>]/<pid>/<start time>`, and works
inside a container as outside (where the namespace is the host's). On the test side
`host_pid` turns such a name back into the host's pid, to read `/proc/<pid>`, send a
signal, or compare with a host pid such as the server's.

The start time (in clock ticks since boot, the same in every pid namespace) is part of the
name because the kernel reuses a namespace's inode number once the namespace is gone: the
next sandboxed container often gets the same namespace inode and, again, pid 2. Without it
a container that replaced a dead one would have the dead one's name.
"""

from __future__ import annotations

import os
from pathlib import Path


def _stat_fields(pid: int | str) -> list[str] | None:
    """The fields of /proc/<pid>/stat after the command name (state, stat's field 3,
    first), or None if there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rpartition(")")[2].split()


def _start_time(pid: int | str) -> str:
    fields = _stat_fields(pid)
    return fields[19] if fields else "gone"  # stat's field 22


def of(pid: int) -> str:
    """The process `pid` of the caller's own pid namespace, named as `me()` names
    processes (a process that is not there gets a name no process has)."""
    return f"{os.readlink('/proc/self/ns/pid')}/{pid}/{_start_time(pid)}"


def me() -> str:
    """This process, by pid namespace, pid in it and start time (see the module)."""
    return of(os.getpid())


def parent() -> str:
    """This process's parent, named as `me()` names it: a parent in the same pid
    namespace (a namespace's init, whose parent is outside it, has none: pid 0)."""
    return of(os.getppid())


def file_name(ident: str) -> str:
    """`ident` as one file name (the same for the same process)."""
    return ident.replace("/", "_")


def _split(ident: str) -> tuple[str, int, str]:
    namespace, pid, start = [*ident.rsplit("/", 2), "", ""][:3]
    if not namespace.startswith("pid:[") or not pid.isdigit() or not start:
        raise ValueError(f"not a process identity from supports.ident.me(): {ident!r}")
    return namespace, int(pid), start


def _innermost_pid(status: str) -> int | None:
    """The last `NSpid:` value of a /proc/<pid>/status: the pid in its own namespace."""
    for line in status.splitlines():
        if line.startswith("NSpid:"):
            return int(line.split()[-1])
    return None


def lookup(ident: str) -> int | None:
    """The host pid of the live process `ident` names, or None if there is none (it has
    exited, or it is a zombie, whose namespace links are gone)."""
    namespace, pid, start = _split(ident)
    if namespace == os.readlink("/proc/self/ns/pid"):
        # The test's own namespace: the pid is the host's.
        candidates = [str(pid)]
    else:
        candidates = [e.name for e in Path("/proc").iterdir() if e.name.isdigit()]
    for candidate in candidates:
        try:
            if os.readlink(f"/proc/{candidate}/ns/pid") != namespace:
                continue
            status = Path(f"/proc/{candidate}/status").read_text()
        except OSError:
            continue
        if _innermost_pid(status) == pid and _start_time(candidate) == start:
            return int(candidate)
    return None


def host_pid(ident: str) -> int:
    """The host pid of the live process `ident` names (see `me()`)."""
    found = lookup(ident)
    if found is None:
        namespace, pid, start = _split(ident)
        raise LookupError(
            f"no live process is {ident!r}: none in pid namespace {namespace} has pid {pid} "
            f"there and start time {start}"
        )
    return found


def alive(ident: str) -> bool:
    """Whether the process `ident` names still runs (a zombie does not)."""
    pid = lookup(ident)
    return pid is not None and state(pid) not in (None, "Z")


def state(pid: int) -> str | None:
    """A host process's state letter (R, S, Z, ...), or None if it is gone."""
    fields = _stat_fields(pid)
    return fields[0] if fields else None


def ancestors(pid: int) -> list[int]:
    """The host pids of `pid`'s parent, its parent's parent, ... up to the first process
    (pid 1 of the test's namespace), nearest first; `pid` itself is not in it."""
    out: list[int] = []
    while True:
        fields = _stat_fields(pid)
        if fields is None:
            raise LookupError(f"no process {pid} (it exited while its ancestors were read)")
        pid = int(fields[1])  # stat's field 4: the parent's pid
        if pid == 0:
            return out
        out.append(pid)


def cmdline(pid: int) -> str:
    """A host process's command line, arguments separated by spaces."""
    return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
