"""The public handles keep the user's signatures under a type checker: mypy, run over two
small files in tests/typing/, finds nothing in the correct one and exactly the marked
lines of the wrong one (a wrong `.remote` argument, a typo in an option, ...)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parents[1] / "typing"


def _mypy(tmp_path: Path, *files: Path) -> dict[str, set[int]]:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--strict",
            "--follow-imports=silent",
            "--cache-dir",
            str(tmp_path / "cache"),
            "--no-error-summary",
            "--hide-error-context",
            *map(str, files),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode in (0, 1), proc.stderr + proc.stdout  # 2: mypy itself failed
    found: dict[str, set[int]] = {}
    for line in proc.stdout.splitlines():
        m = re.match(r"^(.+?):(\d+): error: ", line)
        if m:
            found.setdefault(Path(m.group(1)).name, set()).add(int(m.group(2)))
    return found


def test_typed_uses_check_and_wrong_ones_are_reported(tmp_path: Path) -> None:
    bad = HERE / "typed_errors.py"
    marked = {
        n
        for n, line in enumerate(bad.read_text().splitlines(), 1)
        if re.search(r"\s# error: ", line)
    }
    assert len(marked) >= 9
    found = _mypy(tmp_path, HERE / "typed_app.py", bad)
    assert found.get("typed_app.py", set()) == set()
    assert found.get("typed_errors.py", set()) == marked
