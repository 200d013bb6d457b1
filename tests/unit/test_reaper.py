"""The test session's reaper (tests/supports/reaper.py), with real processes: when the
session's process dies, what it left under its temporary directory is killed, and nothing
else is."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

REAPER = Path(__file__).parents[1] / "supports" / "reaper.py"


def _alive(proc: subprocess.Popen[bytes]) -> bool:
    return proc.poll() is None


def test_leftovers_of_a_killed_session_are_killed(tmp_path: Path) -> None:
    mine, other = tmp_path / "session", tmp_path / "session2"
    session = subprocess.Popen(["sleep", "60"])
    sleeper = [sys.executable, "-c", "import time; time.sleep(60)"]
    env = dict(os.environ)
    left = subprocess.Popen(sleeper, env={**env, "KETCH_HOME": f"{mine}/home"})
    spared = subprocess.Popen(sleeper, env={**env, "KETCH_HOME": f"{other}/home"})
    reaper = subprocess.Popen([sys.executable, str(REAPER), str(session.pid), str(mine)])
    try:
        time.sleep(0.5)
        assert _alive(left) and _alive(spared)  # the session still runs: nothing is touched
        session.kill()
        session.wait()
        assert reaper.wait(timeout=30) == 0
        assert left.wait(timeout=10) == -9
        assert _alive(spared)  # another session's directory (a longer name) is left alone
    finally:
        for proc in (session, left, spared, reaper):
            if _alive(proc):
                proc.kill()
                proc.wait()
