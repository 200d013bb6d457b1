"""Helpers for the CLI tests: app files in tmp dirs, one-line error checks, app listings,
names no other test uses.

Everything here drives the real `ketch` CLI (`python -m ketch.cli`) and plain Python
processes against a real server, chosen by KETCH_HOME.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"


def unique_name(prefix: str) -> str:
    """A name of its own for an object this test creates (the session server is shared)."""
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip())
    return path


def env_for(home: Path, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["KETCH_HOME"] = str(home)
    env["PYTHONPATH"] = str(ROOT / "tests") + os.pathsep + env.get("PYTHONPATH", "")
    env.update(extra)
    return env


def ketch(
    home: Path, *args: str, cwd: Path | None = None, timeout: float = 180, **extra_env: str
) -> subprocess.CompletedProcess[str]:
    """The real CLI in a subprocess, against the server of `home`."""
    return subprocess.run(
        [sys.executable, "-m", "ketch.cli", *args],
        env=env_for(home, **extra_env),
        cwd=cwd or ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def python(
    home: Path, code: str, *, cwd: Path | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """A separate, plain Python process that uses the SDK (no CLI involved)."""
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env=env_for(home),
        cwd=cwd or ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def ok(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 0, f"rc={proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def assert_clean_error(
    proc: subprocess.CompletedProcess[str], *needles: str, max_lines: int = 2
) -> str:
    """A failed command that says why in one line (plus the --verbose hint), no traceback.

    Returns the error line. `needles` must all appear in it.
    """
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, f"expected a failure:\n{out}"
    assert "Traceback" not in out, out
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("Error")]
    assert errors, f"no error line:\n{out}"
    first = errors[0]
    for needle in needles:
        assert needle in first, f"{needle!r} not in the error line {first!r}\n{out}"
    tail = lines[lines.index(first) :]
    assert len(tail) <= max_lines, f"error spans {len(tail)} lines:\n{proc.stderr}"
    return first


def app_rows(home: Path) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = json.loads(ok(ketch(home, "app", "list", "--json")))
    return rows


def app_ids(home: Path) -> set[str]:
    return {r["app_id"] for r in app_rows(home)}


def deployed(home: Path, name: str) -> dict[str, Any] | None:
    for row in app_rows(home):
        if row["name"] == name and row["state"] == "deployed":
            return row
    return None
