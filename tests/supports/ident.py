"""Process identities that survive pid namespaces (this is not an app).

A sandboxed container runs in a pid namespace of its own, where `os.getpid()` is a small
namespace-local number (2, 3, ...) that means nothing on the host and repeats from one
container to the next. `me()` names the calling process by its pid namespace and its pid
in it, which is unique on the host, and works inside a container as outside; on the test
side `host_pid` turns such a name back into the host's pid, to read `/proc/<pid>`, send a
signal, or compare with a host pid such as the server's.
"""

from __future__ import annotations

import os
from pathlib import Path


def of(pid: int) -> str:
    """The process (or process group) `pid` of the caller's own pid namespace, named as
    `me()` names processes."""
    return f"{os.readlink('/proc/self/ns/pid')}/{pid}"


def me() -> str:
    """This process: `pid:[<namespace inode>]/<pid in that namespace>`."""
    return of(os.getpid())


def parent() -> str:
    """This process's parent, named as `me()` names it: a parent in the same pid
    namespace (a namespace's init, whose parent is outside it, has none: pid 0)."""
    return of(os.getppid())


def _split(ident: str) -> tuple[str, int]:
    namespace, sep, pid = ident.rpartition("/")
    if not sep or not namespace.startswith("pid:[") or not pid.isdigit():
        raise ValueError(f"not a process identity from supports.ident.me(): {ident!r}")
    return namespace, int(pid)


def _innermost_pid(status: str) -> int | None:
    """The last `NSpid:` value of a /proc/<pid>/status: the pid in its own namespace."""
    for line in status.splitlines():
        if line.startswith("NSpid:"):
            return int(line.split()[-1])
    return None


def lookup(ident: str) -> int | None:
    """The host pid of the live process `ident` names, or None if there is none (it has
    exited, or it is a zombie, whose namespace links are gone)."""
    namespace, pid = _split(ident)
    if namespace == os.readlink("/proc/self/ns/pid"):
        # The test's own namespace: the pid is the host's.
        try:
            same = os.readlink(f"/proc/{pid}/ns/pid") == namespace
        except OSError:
            return None
        return pid if same else None
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if os.readlink(entry / "ns" / "pid") != namespace:
                continue
            status = (entry / "status").read_text()
        except OSError:
            continue
        if _innermost_pid(status) == pid:
            return int(entry.name)
    return None


def host_pid(ident: str) -> int:
    """The host pid of the live process `ident` names (see `me()`)."""
    found = lookup(ident)
    if found is None:
        raise LookupError(
            f"no live process is {ident!r} (no process in pid namespace "
            f"{_split(ident)[0]} has pid {_split(ident)[1]} there)"
        )
    return found


def alive(ident: str) -> bool:
    """Whether the process `ident` names still runs (a zombie does not)."""
    pid = lookup(ident)
    return pid is not None and state(pid) not in (None, "Z")


def _stat_fields(pid: int) -> list[str] | None:
    """The fields of /proc/<pid>/stat after the command name (state is the first)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rpartition(")")[2].split()


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
        pid = int(fields[1])  # field 4 of stat: the parent's pid
        if pid == 0:
            return out
        out.append(pid)


def cmdline(pid: int) -> str:
    """A host process's command line, arguments separated by spaces."""
    return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
