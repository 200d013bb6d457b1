"""Run as a program beside a test session: when the session's process is gone without
having stopped this reaper (killed from outside, say by a shell's timeout), kill every
process it left that belongs to the session: servers and containers whose command line
or environment names the session's temporary directory.

    python reaper.py <session pid> <session basetemp>
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
from pathlib import Path

# Run as a program: its own folder is on the path, so the helper is imported by its name.
sys.path.insert(0, str(Path(__file__).parent))
from procs import processes


def _leftovers(marker: bytes) -> list[int]:
    return [pid for pid, cmdline, environ in processes() if marker in cmdline + environ]


def main(session: int, basetemp: str) -> None:
    while True:
        try:
            os.kill(session, 0)
        except ProcessLookupError:
            break
        time.sleep(1)
    # With the separator: /tmp/.../pytest-1 must not match pytest-12's processes.
    for pid in _leftovers(basetemp.rstrip("/").encode() + b"/"):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2])
