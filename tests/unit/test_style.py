"""The house checks, run as tests so CI enforces them: ruff (lint and format) over the
tree, mypy strict over src/ (pyproject's [tool.mypy]) and mypy over tests/ with the
looser tests/mypy.ini."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *argv], cwd=ROOT, capture_output=True, text=True, timeout=600
    )


@pytest.mark.parametrize(
    "argv",
    [
        ("ruff", "check", "src", "tests", "bench"),
        ("ruff", "format", "--check", "src", "tests", "bench"),
    ],
    ids=["ruff-check", "ruff-format"],
)
def test_ruff(argv: tuple[str, ...]) -> None:
    proc = _run(*argv)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_mypy_strict_over_src(tmp_path: Path) -> None:
    proc = _run("mypy", "--cache-dir", str(tmp_path / "cache"))
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_mypy_over_tests(tmp_path: Path) -> None:
    proc = _run(
        "mypy", "--config-file", "tests/mypy.ini", "--cache-dir", str(tmp_path / "c"), "tests"
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
