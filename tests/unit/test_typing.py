"""The public handles keep the user's signatures under a type checker: mypy and pyright,
each run over two small files in tests/typing/, find nothing in the correct one and
exactly the marked lines of the wrong one (a wrong `.remote` argument, a typo in an
option, ...)."""

from __future__ import annotations

import json
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


def _pyright(tmp_path: Path, *files: Path) -> dict[str, set[int]]:
    proc = subprocess.run(
        [sys.executable, "-m", "pyright", "--outputjson", "--pythonpath", sys.executable]
        + [str(f) for f in files],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert proc.returncode in (0, 1), proc.stderr + proc.stdout
    found: dict[str, set[int]] = {}
    for diag in json.loads(proc.stdout)["generalDiagnostics"]:
        if diag["severity"] == "error":
            line = diag["range"]["start"]["line"] + 1  # pyright counts from 0
            found.setdefault(Path(diag["file"]).name, set()).add(line)
    return found


def _marked() -> set[int]:
    text = (HERE / "typed_errors.py").read_text()
    return {n for n, line in enumerate(text.splitlines(), 1) if re.search(r"\s# error: ", line)}


def test_mypy_checks_typed_uses_and_reports_wrong_ones(tmp_path: Path) -> None:
    assert len(_marked()) >= 10
    found = _mypy(tmp_path, HERE / "typed_app.py", HERE / "typed_errors.py")
    assert found.get("typed_app.py", set()) == set()
    assert found.get("typed_errors.py", set()) == _marked()


def test_pyright_checks_typed_uses_and_reports_wrong_ones(tmp_path: Path) -> None:
    found = _pyright(tmp_path, HERE / "typed_app.py", HERE / "typed_errors.py")
    assert found.get("typed_app.py", set()) == set()
    assert found.get("typed_errors.py", set()) == _marked()
