"""The process-group guard of a Ray container (`ketch._backends.ray_guard`), with real
processes and no Ray: a stand-in "raylet" process and a pipe standing for the actor. The
container's group must die when either goes, and its exit must be reported faithfully."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

_GUARD = (sys.executable, "-m", "ketch._backends.ray_guard")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _wait_gone(pid: int, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while _alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


@pytest.fixture
def raylet() -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    yield proc
    proc.kill()
    proc.wait()


def _guard(raylet_pid: int, script: str) -> tuple[subprocess.Popen[bytes], int]:
    """The guard over a child that prints the pid of a grandchild it starts, then sleeps."""
    proc = subprocess.Popen(
        [*_GUARD, str(raylet_pid), sys.executable, "-c", script],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        start_new_session=True,
    )
    assert proc.stdout is not None
    grandchild = int(proc.stdout.readline())
    return proc, grandchild


_SLEEPER = (
    "import subprocess, sys, time\n"
    "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'])\n"
    "print(p.pid, flush=True)\n"
    "time.sleep(600)\n"
)


@contextlib.contextmanager
def _reaped(proc: subprocess.Popen[bytes], grandchild: int | None) -> Iterator[None]:
    try:
        yield
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        if grandchild is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(grandchild, signal.SIGKILL)


@pytest.mark.spec("G4")
def test_the_group_dies_with_the_raylet(raylet: subprocess.Popen[bytes]) -> None:
    proc, grandchild = _guard(raylet.pid, _SLEEPER)
    with _reaped(proc, grandchild):
        assert _alive(grandchild)
        raylet.kill()  # the node's raylet is gone; the actor's pipe stays open
        raylet.wait()
        assert proc.wait(timeout=30) == -signal.SIGKILL
        assert _wait_gone(grandchild), "a process the user's code started outlived its node"


@pytest.mark.spec("G4")
def test_the_group_dies_with_the_actor(raylet: subprocess.Popen[bytes]) -> None:
    proc, grandchild = _guard(raylet.pid, _SLEEPER)
    with _reaped(proc, grandchild):
        assert proc.stdin is not None
        proc.stdin.close()  # what the kernel does when the actor's worker is killed
        assert proc.wait(timeout=30) == -signal.SIGKILL
        assert _wait_gone(grandchild)


def _exit_of(raylet_pid: int, code: str) -> int:
    # stdin stays open, as the actor's pipe does while it lives.
    proc = subprocess.Popen(
        [*_GUARD, str(raylet_pid), sys.executable, "-c", code],
        stdin=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        return proc.wait(timeout=60)
    finally:
        assert proc.stdin is not None
        proc.stdin.close()


def test_the_runtime_exit_is_reported_as_it_was(raylet: subprocess.Popen[bytes]) -> None:
    assert _exit_of(raylet.pid, "raise SystemExit(3)") == 3
    segv = "import os, signal; os.kill(os.getpid(), signal.SIGSEGV)"
    assert _exit_of(raylet.pid, segv) == -signal.SIGSEGV


def test_a_graceful_stop_reaches_the_runtime_not_the_guard(
    raylet: subprocess.Popen[bytes],
) -> None:
    script = (
        "import signal, sys, time\n"
        "signal.signal(signal.SIGTERM, lambda *_: sys.exit(7))\n"
        "print(0, flush=True)\n"
        "time.sleep(600)\n"
    )
    proc, _ = _guard(raylet.pid, script)
    with _reaped(proc, None):
        os.killpg(proc.pid, signal.SIGTERM)  # as the actor's stop() does
        assert proc.wait(timeout=30) == 7
