"""Finding an installed Python interpreter of a version ("3.12"), where `uv python find`
looks and where it misses: pyenv versions that are installed but not selected (their
shims exit 127), uv-managed interpreters, and the system's own."""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = ["PythonNotFound", "Search", "find_installed", "find_python"]

SYSTEM_DIRS = (Path("/usr/bin"), Path("/usr/local/bin"))
# pyenv names versions 3.12.1; "3.12-dev", "3.13.0t" (free-threaded) and conda builds are
# left out: they are not the plain CPython the version names.
_PYENV_NAME = re.compile(r"(\d+)\.(\d+)\.(\d+)")
# uv names its downloads cpython-3.12.1-linux-x86_64-gnu; "+freethreaded" ones are left out.
_UV_NAME = re.compile(r"cpython-(\d+)\.(\d+)\.(\d+)-[^+]+")


class PythonNotFound(Exception):
    """No interpreter of the version is installed in any place searched."""

    def __init__(self, version: str, searched: Sequence[str], detail: str = "") -> None:
        super().__init__(version, list(searched), detail)
        self.version = version
        self.searched = list(searched)
        self.detail = detail

    def __str__(self) -> str:
        v = self.version
        return (
            f"Python {v} is not installed on this machine (searched: "
            f"{'; '.join(self.searched)}), and ketch does not download interpreters; "
            f"install it (`uv python install {v}`, `pyenv install {v}` or "
            f"`apt-get install python{v}`) or choose a Python version that is installed"
        )


@dataclass(frozen=True)
class Search:
    """Where to look besides `uv python find`."""

    pyenv_root: Path
    uv_dir: Path | None
    system_dirs: tuple[Path, ...] = SYSTEM_DIRS

    @classmethod
    def from_env(cls, env: Mapping[str, str], uv_dir: Path | None) -> Search:
        root = env.get("PYENV_ROOT") or str(Path(env.get("HOME", "~")) / ".pyenv")
        return cls(Path(root).expanduser(), uv_dir)

    def describe(self) -> list[str]:
        places = [f"{self.pyenv_root}/versions"]
        if self.uv_dir is not None:
            places.append(str(self.uv_dir))
        places += [str(d) for d in self.system_dirs]
        return places


def _split(version: str) -> tuple[int, int]:
    major, minor = version.split(".")[:2]
    return int(major), int(minor)


def _executable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


def _newest(root: Path, pattern: re.Pattern[str], want: tuple[int, int], exe: str) -> Path | None:
    """The highest patch release under `root` whose directory name matches `pattern` and
    names version `want`, with `bin/<exe>` present."""
    try:
        names = os.listdir(root)
    except OSError:
        return None
    found: list[tuple[int, Path]] = []
    for name in names:
        m = pattern.fullmatch(name)
        if m is None or (int(m[1]), int(m[2])) != want:
            continue
        path = root / name / "bin" / exe
        if _executable(path):
            found.append((int(m[3]), path))
    return max(found)[1] if found else None


def find_installed(version: str, search: Search) -> Path | None:
    """An interpreter of `version` ("3.12") in pyenv's versions, uv's managed ones, or the
    system directories, in that order; the highest patch release within each."""
    want = _split(version)
    exe = f"python{want[0]}.{want[1]}"
    for root, pattern in ((search.pyenv_root / "versions", _PYENV_NAME), (search.uv_dir, _UV_NAME)):
        if root is not None and (found := _newest(root, pattern, want, exe)) is not None:
            return found
    for directory in search.system_dirs:
        if _executable(directory / exe):
            return directory / exe
    return None


async def _output(argv: Sequence[str], env: Mapping[str, str], cwd: Path) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=dict(env),
        cwd=cwd,
    )
    out, err = await proc.communicate()
    code = proc.returncode if proc.returncode is not None else -1
    return code, out.decode(errors="replace").strip(), err.decode(errors="replace").strip()


async def find_python(uv_bin: str, version: str, env: Mapping[str, str], cwd: Path) -> str:
    """The path of an installed interpreter of `version`: what `uv python find` says, else
    what `find_installed` finds. Raises PythonNotFound naming every place searched."""
    code, found, err = await _output([uv_bin, "python", "find", "--system", version], env, cwd)
    if code == 0 and found:
        return found
    code, uv_dir, _ = await _output([uv_bin, "python", "dir"], env, cwd)
    search = Search.from_env(env, Path(uv_dir) if code == 0 and uv_dir else None)
    path = await asyncio.to_thread(find_installed, version, search)
    if path is None:
        raise PythonNotFound(version, ["uv python find", *search.describe()], err)
    return str(path)
