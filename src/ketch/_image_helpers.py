"""The Image helpers that read a local project (requirements, pyproject, uv lock) or only
record settings, turned into the step kinds the builder already knows."""

from __future__ import annotations

import contextlib
import subprocess
import tomllib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ketch.exception import InvalidError

if TYPE_CHECKING:
    from ketch.image import Image
    from ketch.secret import Secret

__all__ = [
    "CONFIG_STEP_KINDS",
    "build_gpu",
    "check_build_only",
    "container_config",
    "imports",
    "pip_install_from_pyproject",
    "pyproject_packages",
    "uv_export",
]

# Recorded on the image, never built: the runtime starts a ketch container its own way;
# a process that runs the image's default command (a Sandbox) reads them.
CONFIG_STEP_KINDS = frozenset({"cmd", "entrypoint"})


@contextlib.contextmanager
def imports() -> Iterator[None]:
    """Packages that only the image has: missing here is expected, missing in the
    container is a broken image and must say so."""
    from ketch.image import _in_container

    try:
        yield
    except ImportError:
        if _in_container():
            raise


def check_build_only(method: str, secrets: Sequence[object], gpu: object) -> None:
    # Modal runs these steps with secrets or on a GPU; ketch's pip steps run without
    # either, and an install that silently lacks its token would fail far from here.
    if secrets:
        raise InvalidError(
            f"Image.{method}(secrets=...) is not supported: ketch installs packages without "
            "secrets; use an index URL the server can reach, or Image.run_commands"
        )
    if gpu is not None:
        raise InvalidError(
            f"Image.{method}(gpu=...) is not supported: ketch's package steps run without a "
            "GPU; install what must be built against the device with "
            "Image.run_commands(..., gpu=...)"
        )


def build_gpu(method: str, gpu: object) -> str | list[str] | None:
    """A build step's GPU request, spelled as a function's `gpu=` is. The server lends the
    step matching GPUs of its host while it runs (or fails the build saying none fit)."""
    from ketch._utils.options import parse_gpu

    try:
        request = parse_gpu(gpu)
    except InvalidError as exc:
        raise InvalidError(f"Image.{method}: {exc}") from None
    # ketch.gpu objects are str subclasses; the spec holds plain JSON values.
    if isinstance(request, list):
        return [str(r) for r in request]
    return None if request is None else str(request)


def argv_list(value: object, method: str) -> list[str]:
    """A command as Docker's exec form takes it: a list of strings."""
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        raise InvalidError(f"Image.{method} expects a list of strings, got {value!r}")
    return list(value)


def container_config(steps: Iterable[tuple[str, Mapping[str, Any]]]) -> dict[str, list[str]]:
    """The image's ENTRYPOINT and CMD as Docker combines them: a later entrypoint resets
    the command, as a Dockerfile's ENTRYPOINT does."""
    out: dict[str, list[str]] = {}
    for kind, params in steps:
        if kind == "entrypoint":
            out["entrypoint"] = list(params["argv"])
            out.pop("cmd", None)
        elif kind == "cmd":
            out["cmd"] = list(params["argv"])
    return out


def _read_toml(path: Path, method: str) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise InvalidError(f"Image.{method}: cannot read {str(path)!r}: {exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise InvalidError(f"Image.{method}: {str(path)!r} is not valid TOML: {exc}") from exc


def pyproject_packages(path: Path, optional_dependencies: Sequence[str]) -> list[str]:
    """The requirements a pyproject.toml declares: `[project] dependencies`, plus the named
    `[project.optional-dependencies]` groups."""
    method = "pip_install_from_pyproject"
    project = _read_toml(path, method).get("project")
    if not isinstance(project, dict):
        raise InvalidError(f"Image.{method}: {str(path)!r} has no [project] table")
    packages = list(project.get("dependencies") or [])
    optional: dict[str, list[str]] = project.get("optional-dependencies") or {}
    for group in optional_dependencies:
        if group not in optional:
            raise InvalidError(
                f"Image.{method}: {str(path)!r} has no optional dependency group {group!r} "
                f"(it has: {', '.join(sorted(optional)) or 'none'})"
            )
        packages.extend(optional[group])
    if not all(isinstance(p, str) for p in packages):
        raise InvalidError(f"Image.{method}: {str(path)!r} lists a dependency that is not a string")
    return packages


def uv_export(
    project_dir: Path, *, groups: Sequence[str], extras: Sequence[str], frozen: bool
) -> str:
    """The locked requirements of a uv project, as a requirements file.

    Exported here rather than synced in the build: the image then installs exactly the
    lock's versions with the builder's one uv step, and the lock's content is in the hash.
    The project itself and workspace members are left out (Modal's uv_sync does not
    install the project either; add its source with add_local_python_source).
    """
    method = "uv_sync"
    if not (project_dir / "pyproject.toml").is_file():
        raise InvalidError(f"Image.{method}: {str(project_dir)!r} has no pyproject.toml")
    if not (project_dir / "uv.lock").is_file():
        raise InvalidError(
            f"Image.{method}: {str(project_dir)!r} has no uv.lock; run `uv lock` there first"
        )
    import uv

    argv = [
        uv.find_uv_bin(),
        "export",
        "--directory",
        str(project_dir),
        "--format",
        "requirements-txt",
        "--no-hashes",
        "--no-header",
        "--no-annotate",
        "--no-emit-project",
        "--no-emit-workspace",
        "--frozen" if frozen else "--locked",
    ]
    for group in groups:
        argv += ["--group", group]
    for extra in extras:
        argv += ["--extra", extra]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise InvalidError(f"Image.{method}: `uv export` could not run: {exc}") from exc
    if done.returncode != 0:
        why = done.stderr.strip().splitlines()[-1:] or [f"exit status {done.returncode}"]
        raise InvalidError(f"Image.{method}: `uv export` failed in {str(project_dir)!r}: {why[0]}")
    return done.stdout


def pip_install_from_pyproject(
    self: Image,
    pyproject_toml: str,
    optional_dependencies: Sequence[str] = (),
    *,
    find_links: str | None = None,
    index_url: str | None = None,
    extra_index_url: str | None = None,
    pre: bool = False,
    extra_options: str = "",
    force_build: bool = False,
    secrets: Sequence[Secret] = (),
    gpu: object = None,
) -> Image:
    """Install a local pyproject.toml's `[project] dependencies`, plus the named
    optional-dependency groups (the project itself is not installed)."""
    from ketch.image import _flatten_strings, _in_container

    check_build_only("pip_install_from_pyproject", secrets, gpu)
    if _in_container():
        return self
    groups = _flatten_strings(optional_dependencies, "optional_dependencies")
    path = Path(pyproject_toml).expanduser().resolve()
    return self.pip_install(
        *pyproject_packages(path, groups),
        index_url=index_url,
        extra_index_url=extra_index_url,
        find_links=find_links,
        pre=pre,
        extra_options=extra_options,
    )
