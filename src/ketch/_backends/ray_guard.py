"""The leader of a Ray container's process group: it starts the ketch runtime as its child
and kills the whole group when the Ray actor that started it is gone (its pipe closes) or
when the node's raylet is gone.

Why a process of its own: a Ray worker killed by `ray.kill` or by its node's end dies with
SIGKILL and cannot clean up, and a worker can even outlive its raylet; the runtime (and
whatever the user's code started) must never outlive either. Standard library only: it
runs with the node's Python before anything of the container is loaded.

Usage: python -m ketch._backends.ray_guard <raylet pid> <argv of the container...>
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import subprocess
import sys


def _pidfd(pid: int) -> int | None:
    """A descriptor that becomes readable when `pid` exits; None if it is gone already."""
    try:
        return os.pidfd_open(pid)
    except ProcessLookupError:
        return None


def _kill_group() -> None:
    # The guard is in the group too: it goes with it, which is what is wanted.
    os.killpg(os.getpgrp(), signal.SIGKILL)


def _exit_as(code: int) -> int:
    if code < 0:
        # Die of the same signal, so that the actor sees what the runtime saw.
        signal.signal(-code, signal.SIG_DFL)
        os.kill(os.getpid(), -code)
    return code


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print("usage: python -m ketch._backends.ray_guard <raylet pid> <argv...>", file=sys.stderr)
        return 2
    raylet = _pidfd(int(argv[0]))
    if raylet is None:
        return 1  # the node is going away: start nothing
    # A graceful stop signals the whole group; the runtime handles it, the guard waits for
    # it. A Python handler (not SIG_IGN) so that the child starts with the default again.
    signal.signal(signal.SIGTERM, lambda *_: None)
    child = subprocess.Popen(argv[1:], stdin=subprocess.DEVNULL)
    child_fd = _pidfd(child.pid)
    if child_fd is None:
        return _exit_as(child.wait())
    poller = select.poll()
    # stdin is the actor's pipe: EOF (POLLHUP) when the actor's worker process is gone.
    poller.register(sys.stdin.fileno(), select.POLLIN | select.POLLHUP)
    poller.register(raylet, select.POLLIN)
    poller.register(child_fd, select.POLLIN)
    while True:
        try:
            events = poller.poll()
        except InterruptedError:
            continue
        for fd, _ in events:
            if fd == child_fd:
                return _exit_as(child.wait())
            if fd == raylet:
                _kill_group()
            with contextlib.suppress(OSError):
                if os.read(fd, 4096):
                    continue  # nothing is ever written; stay on guard
            _kill_group()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
