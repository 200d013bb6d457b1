"""The public `Image` class: an immutable, content-addressed recipe for a container environment."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias

from ketch._image_conda import micromamba as _micromamba
from ketch._image_conda import micromamba_install as _micromamba_install
from ketch._image_files import LocalFiles as _LocalFiles
from ketch._image_files import check_remote_path as _check_remote_path
from ketch._image_files import (
    hash_file,
    hash_file_set,
    hash_local_entry,
    iter_local_files,
)
from ketch._image_files import resolve_python_source as _resolve_python_source
from ketch._image_function import run_function as _run_function
from ketch._image_helpers import build_gpu as _build_gpu
from ketch._image_helpers import pip_install_from_pyproject as _pip_install_from_pyproject
from ketch.exception import InvalidError

if TYPE_CHECKING:
    from ketch.secret import Secret

__all__ = [
    "Image",
    "hash_build_spec",
    "hash_file",
    "hash_file_set",
    "hash_local_entry",
    "iter_local_files",
]

# Bumped whenever the meaning of a spec changes for the builder, so old cache entries
# are not mistaken for images built under different rules.
_SPEC_FORMAT = 1

# Steps that change the built environment. They cannot come after a copy=False file,
# because such files are only mounted when a container starts, after the build is over.
_BUILD_STEP_KINDS = frozenset(
    {"pip_install", "uv_pip_install", "run_commands", "apt_install", "dockerfile_commands"}
    | {"run_function", "micromamba_install"}
)

_PYTHON_VERSION_RE = re.compile(r"3\.\d+")


@dataclass(frozen=True)
class _Step:
    # Stored as canonical JSON so that an Image can never be mutated through a shared dict.
    kind: str
    params_json: str

    def to_dict(self) -> dict[str, Any]:
        params: dict[str, Any] = json.loads(self.params_json)
        return {"type": self.kind, **params}


_Layer = _Step | _LocalFiles

# Package and command arguments: strings, or (nested) lists and tuples of strings.
StrArgs: TypeAlias = "str | list[StrArgs] | tuple[StrArgs, ...]"


def _canonical_json(obj: object) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _flatten_strings(args: Iterable[object], what: str) -> list[str]:
    out: list[str] = []
    for arg in args:
        if isinstance(arg, str):
            out.append(arg)
        elif isinstance(arg, list | tuple):
            out.extend(_flatten_strings(arg, what))
        else:
            raise InvalidError(f"{what} expects strings or lists of strings, got {arg!r}")
    return out


def _optional_str(value: object, name: str) -> str | None:
    if value is not None and not isinstance(value, str):
        raise InvalidError(f"{name} must be a string or None, got {value!r}")
    return value


def hash_build_spec(spec: Mapping[str, Any]) -> str:
    """Return the content address of the part of an image spec that the builder turns into files.

    copy=False files are left out: they are mounted when a container starts and never
    change the built environment.
    """
    copied = [
        {
            "remote_path": f["remote_path"],
            "kind": f["kind"],
            "sha256": f["sha256"],
            "position": f["position"],
        }
        for f in spec.get("files", [])
        if f["copy"]
    ]
    payload = {
        "format": _SPEC_FORMAT,
        "python_version": spec["python_version"],
        "steps": spec.get("steps", []),
        "copied_files": copied,
    }
    return hashlib.sha256(_canonical_json(payload).encode("utf-8")).hexdigest()


class Image:
    """An immutable description of a container environment: a Python version plus steps.

    Every method returns a new Image. Create one with `Image.debian_slim()`.
    """

    __slots__ = ("_layers", "_python_version")

    def __init__(self, python_version: str, layers: tuple[_Layer, ...] = ()) -> None:
        self._python_version = python_version
        self._layers = layers

    def __repr__(self) -> str:
        return f"Image(python_version={self._python_version!r}, layers={len(self._layers)})"

    def __setattr__(self, name: str, value: object) -> None:
        if hasattr(self, name):
            raise AttributeError(f"Image is immutable; {name} cannot be changed")
        object.__setattr__(self, name, value)

    @property
    def python_version(self) -> str:
        """The image's Python version as "3.X"."""
        return self._python_version

    @classmethod
    def debian_slim(cls, python_version: str | None = None) -> Image:
        """Start an image from a slim base with the given Python ("3.X"; default: the local one).

        With only Python steps the image is a venv on the server's Python; apt_install,
        run_commands or Dockerfile steps make it a Debian root filesystem, whose Python is
        Debian's (3.11 on bookworm, 3.13 on trixie).
        """
        if python_version is None:
            python_version = f"{sys.version_info.major}.{sys.version_info.minor}"
        if not isinstance(python_version, str) or not _PYTHON_VERSION_RE.fullmatch(python_version):
            raise InvalidError(
                f'python_version must look like "3.X" (for example "3.11"), got {python_version!r}'
            )
        return cls(python_version)

    @classmethod
    def from_registry(
        cls,
        tag: str,
        *,
        secret: Secret | None = None,
        add_python: str | None = None,
        setup_dockerfile_commands: Sequence[str] = (),
        force_build: bool = False,
    ) -> Image:
        """Start from a registry image ("ubuntu:24.04"), pulled by the server when it builds.

        It needs python3 of this machine's version on its PATH, unless `add_python` ("3.X")
        adds one (a uv-managed interpreter the server has). `secret`: a Secret.from_name with
        REGISTRY_USERNAME and REGISTRY_PASSWORD. `setup_dockerfile_commands` run before Python
        is added. A moved tag is pulled again at the next build; `force_build` is accepted
        for Modal compatibility (rebuild with `--force-build`).
        """
        from ketch._images.steps import registry_step

        version, params = registry_step(
            tag, secret, add_python, setup_dockerfile_commands, force_build, _PYTHON_VERSION_RE
        )
        return cls(version)._with_step("from_registry", params)

    # -- building blocks -------------------------------------------------------------

    def _has_step(self, kind: str) -> bool:
        return any(isinstance(layer, _Step) and layer.kind == kind for layer in self._layers)

    def _has_mounted_files(self) -> bool:
        return any(isinstance(layer, _LocalFiles) and not layer.copy for layer in self._layers)

    def _with(self, layer: _Layer) -> Image:
        return Image(self._python_version, (*self._layers, layer))

    def _with_step(self, kind: str, params: Mapping[str, Any]) -> Image:
        if kind in _BUILD_STEP_KINDS and self._has_mounted_files():
            raise InvalidError(
                f"Image.{kind} cannot come after an add_local_*(copy=False) step: those files "
                "are only mounted when a container starts, after the image is built. "
                "Pass copy=True to the add_local_* call, or move it after the build steps."
            )
        return self._with(_Step(kind, _canonical_json(dict(params))))

    def _with_files(self, files: _LocalFiles, method: str) -> Image:
        if files.copy and self._has_mounted_files():
            raise InvalidError(
                f"Image.{method}(copy=True) cannot come after an add_local_*(copy=False) step: "
                "copying is a build step and mounted files only appear when a container starts. "
                "Move the copy=True call before the copy=False ones."
            )
        return self._with(files)

    @staticmethod
    def _pip_options(
        index_url: object,
        extra_index_url: object,
        find_links: object,
        pre: object,
        extra_options: object,
    ) -> dict[str, Any]:
        if not isinstance(pre, bool):
            raise InvalidError(f"pre must be a bool, got {pre!r}")
        if not isinstance(extra_options, str):
            raise InvalidError(f"extra_options must be a string, got {extra_options!r}")
        return {
            "index_url": _optional_str(index_url, "index_url"),
            "extra_index_url": _optional_str(extra_index_url, "extra_index_url"),
            "find_links": _optional_str(find_links, "find_links"),
            "pre": pre,
            "extra_options": extra_options,
        }

    # -- public steps ----------------------------------------------------------------

    def pip_install(
        self,
        *packages: StrArgs,
        index_url: str | None = None,
        extra_index_url: str | None = None,
        find_links: str | None = None,
        pre: bool = False,
        extra_options: str = "",
    ) -> Image:
        """Install Python packages (installed with uv; pip-style options are mapped to uv's)."""
        pkgs = _flatten_strings(packages, "Image.pip_install")
        options = self._pip_options(index_url, extra_index_url, find_links, pre, extra_options)
        if not pkgs:
            return self
        return self._with_step("pip_install", {"packages": pkgs, **options})

    def uv_pip_install(
        self,
        *packages: StrArgs,
        requirements: list[str] | None = None,
        index_url: str | None = None,
        extra_index_url: str | None = None,
        find_links: str | None = None,
        pre: bool = False,
        extra_options: str = "",
    ) -> Image:
        """Install Python packages with uv, optionally from local requirements files.

        The requirements files are read now, so that their content is part of the image hash.
        """
        pkgs = _flatten_strings(packages, "Image.uv_pip_install")
        options = self._pip_options(index_url, extra_index_url, find_links, pre, extra_options)
        req_paths = _flatten_strings(requirements or [], "Image.uv_pip_install(requirements=)")
        reqs: list[dict[str, str]] = []
        for req in req_paths:
            path = Path(req).expanduser().resolve()
            try:
                content = path.read_text(encoding="utf-8")
            except OSError as exc:
                raise InvalidError(
                    f"Image.uv_pip_install: cannot read requirements file {req!r}: {exc}"
                ) from exc
            reqs.append({"path": str(path), "content": content})
        if not pkgs and not reqs:
            return self
        return self._with_step(
            "uv_pip_install", {"packages": pkgs, "requirements": reqs, **options}
        )

    def env(self, vars: dict[str, str]) -> Image:
        """Set environment variables in the image's containers."""
        if not isinstance(vars, Mapping):
            raise InvalidError(f"Image.env expects a dict of strings, got {vars!r}")
        for key, value in vars.items():
            if not isinstance(key, str) or not isinstance(value, str):
                raise InvalidError(
                    f"Image.env expects string keys and values, got {key!r}: {value!r}"
                )
        if not vars:
            return self
        return self._with_step("env", {"vars": dict(vars)})

    def workdir(self, path: str) -> Image:
        """Set the working directory of the image's containers."""
        if not isinstance(path, str) or not path:
            raise InvalidError(f"Image.workdir expects a non-empty string, got {path!r}")
        return self._with_step("workdir", {"path": path})

    def run_commands(self, *commands: StrArgs, gpu: object = None) -> Image:
        """Run shell commands at build time, as root with network, one layer each. With
        `gpu=` (as a function takes it) they run holding matching GPUs of the server's host,
        which they see as a container does (CUDA_VISIBLE_DEVICES and the device files)."""
        request = _build_gpu("run_commands", gpu)
        cmds = _flatten_strings(commands, "Image.run_commands")
        if not cmds:
            return self
        params: dict[str, Any] = {"commands": cmds}
        if request is not None:
            params["gpu"] = request  # only then: images without a GPU keep their hashes
        return self._with_step("run_commands", params)

    def apt_install(self, *packages: StrArgs) -> Image:
        """Install Debian packages at build time (`apt-get install --no-install-recommends`)."""
        pkgs = _flatten_strings(packages, "Image.apt_install")
        if not pkgs:
            return self
        return self._with_step("apt_install", {"packages": pkgs})

    def dockerfile_commands(
        self,
        *dockerfile_commands: StrArgs,
        context_dir: str | os.PathLike[str] | None = None,
        build_args: dict[str, str] | None = None,
    ) -> Image:
        """Extend the image with Dockerfile instructions (RUN, COPY, ADD, ENV, WORKDIR, ARG,
        USER, SHELL, ENTRYPOINT, CMD). COPY/ADD read local files from `context_dir` (default:
        the current directory); their content is part of the image's hash."""
        cmds = _flatten_strings(dockerfile_commands, "Image.dockerfile_commands")
        if not cmds:
            return self
        context = Path(context_dir or ".").expanduser().resolve()
        return self._with_dockerfile(cmds, context, build_args, None)

    @staticmethod
    def from_dockerfile(
        path: str | os.PathLike[str],
        context_dir: str | os.PathLike[str] | None = None,
        *,
        build_args: dict[str, str] | None = None,
    ) -> Image:
        """Build an image from a Dockerfile; COPY/ADD sources come from `context_dir`
        (default: the Dockerfile's directory). `FROM debian:bookworm` (or trixie) is the
        Debian base; other images come with Image.from_registry."""
        from ketch._images.steps import DEBIAN_PYTHON, debian_suite

        dockerfile = Path(path).expanduser().resolve()
        context = Path(context_dir).expanduser().resolve() if context_dir else dockerfile.parent
        if _in_container():
            return Image.debian_slim()  # built already; the Dockerfile is not here
        try:
            text = dockerfile.read_text(encoding="utf-8")
        except OSError as exc:
            raise InvalidError(f"Image.from_dockerfile: cannot read {str(path)!r}: {exc}") from exc
        from_ref = re.search(r"^\s*FROM\s+(?:--\S+\s+)*(\S+)", text, re.MULTILINE | re.IGNORECASE)
        suite = debian_suite(from_ref.group(1)) if from_ref else None
        image = Image.debian_slim(DEBIAN_PYTHON[suite] if suite else None)
        return image._with_dockerfile(text.splitlines(), context, build_args, str(dockerfile))

    def _with_dockerfile(
        self,
        commands: list[str],
        context: Path,
        build_args: Mapping[str, str] | None,
        dockerfile: str | None,
    ) -> Image:
        from ketch._images.steps import dockerfile_step

        args = dict(build_args or {})
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in args.items()):
            raise InvalidError(f"build_args must map strings to strings, got {build_args!r}")
        earlier = [layer.to_dict() for layer in self._layers if isinstance(layer, _Step)]
        params = dockerfile_step(
            commands,
            context_dir=context,
            build_args=args,
            dockerfile=dockerfile,
            earlier=earlier,
            hash_context=not _in_container(),
        )
        return self._with_step("dockerfile_commands", params)

    def add_local_file(
        self, local_path: str | os.PathLike[str], remote_path: str, *, copy: bool = False
    ) -> Image:
        """Add a local file at `remote_path` (a trailing '/' keeps the file's name).

        copy=False mounts it when a container starts; copy=True makes it part of the build.
        """
        remote = _check_remote_path(remote_path, "add_local_file")
        path = Path(local_path).expanduser().resolve()
        if _in_container():
            return self  # the image was built already; local paths mean nothing here
        if not path.is_file():
            raise InvalidError(f"Image.add_local_file: {str(local_path)!r} is not a file")
        if remote.endswith("/"):
            remote = remote + path.name
        files = _LocalFiles(str(path), remote, False, bool(copy), (), None)
        return self._with_files(files, "add_local_file")

    def add_local_dir(
        self,
        local_path: str | os.PathLike[str],
        remote_path: str,
        *,
        copy: bool = False,
        ignore: Sequence[str] = (),
    ) -> Image:
        """Add a local directory at `remote_path`, leaving out files matching `ignore` globs.

        copy=False mounts it when a container starts; copy=True makes it part of the build.
        """
        remote = _check_remote_path(remote_path, "add_local_dir")
        path = Path(local_path).expanduser().resolve()
        if _in_container():
            return self
        if not path.is_dir():
            raise InvalidError(f"Image.add_local_dir: {str(local_path)!r} is not a directory")
        patterns = _flatten_strings([ignore] if isinstance(ignore, str) else ignore, "ignore")
        files = _LocalFiles(str(path), remote, True, bool(copy), tuple(patterns), None)
        return self._with_files(files, "add_local_dir")

    def add_local_python_source(self, *module_names: str, copy: bool = False) -> Image:
        """Add local Python modules or packages, found as this process would import them.

        Each lands under /root (for example /root/pkg/ or /root/mod.py).
        """
        image = self
        if _in_container():
            return image
        for name in _flatten_strings(module_names, "Image.add_local_python_source"):
            image = image._with_files(
                _resolve_python_source(name, bool(copy)), "add_local_python_source"
            )
        return image

    run_function = _run_function
    micromamba = classmethod(_micromamba)
    micromamba_install = _micromamba_install
    pip_install_from_pyproject = _pip_install_from_pyproject

    # -- Modal's project and config helpers (logic in _image_helpers) -------------------

    def imports(self) -> contextlib.AbstractContextManager[None]:
        """`with image.imports(): import torch`: an ImportError is tolerated where the
        script runs locally (the package is only in the image) and raised in a container."""
        from ketch._image_helpers import imports

        return imports()

    def pip_install_from_requirements(
        self,
        requirements_txt: str,
        find_links: str | None = None,
        *,
        index_url: str | None = None,
        extra_index_url: str | None = None,
        pre: bool = False,
        extra_options: str = "",
        force_build: bool = False,
        secrets: Sequence[Secret] = (),
        gpu: object = None,
    ) -> Image:
        """Install the packages of a local requirements file (read now: part of the hash)."""
        from ketch._image_helpers import check_build_only

        check_build_only("pip_install_from_requirements", secrets, gpu)
        if _in_container():
            return self  # built already; the local file is not here
        return self.uv_pip_install(
            requirements=[requirements_txt],
            index_url=index_url,
            extra_index_url=extra_index_url,
            find_links=find_links,
            pre=pre,
            extra_options=extra_options,
        )

    def uv_sync(
        self,
        uv_project_dir: str = "./",
        *,
        force_build: bool = False,
        groups: Sequence[str] | None = None,
        extras: Sequence[str] | None = None,
        frozen: bool = True,
        extra_options: str = "",
        uv_version: str | None = None,
        secrets: Sequence[Secret] = (),
        gpu: object = None,
    ) -> Image:
        """Install a local uv project's locked dependencies (uv.lock, with `groups` and
        `extras`; frozen=False insists the lock is up to date). The project itself is not
        installed; the server's uv does the install, whatever `uv_version` says."""
        from ketch._image_helpers import check_build_only, uv_export

        check_build_only("uv_sync", secrets, gpu)
        if _in_container():
            return self
        project = Path(uv_project_dir).expanduser().resolve()
        content = uv_export(
            project,
            groups=_flatten_strings(groups or [], "groups"),
            extras=_flatten_strings(extras or [], "extras"),
            frozen=bool(frozen),
        )
        options = self._pip_options(None, None, None, False, extra_options)
        reqs = [{"path": str(project / "uv.lock"), "content": content}]
        return self._with_step("uv_pip_install", {"packages": [], "requirements": reqs, **options})

    def cmd(self, cmd: list[str]) -> Image:
        """Record the image's default command (a Sandbox without a command runs it)."""
        from ketch._image_helpers import argv_list

        return self._with_step("cmd", {"argv": argv_list(cmd, "cmd")})

    def entrypoint(self, entrypoint_commands: list[str]) -> Image:
        """Record the image's entrypoint; as in Docker, it resets an earlier `cmd`."""
        from ketch._image_helpers import argv_list

        return self._with_step("entrypoint", {"argv": argv_list(entrypoint_commands, "entrypoint")})

    def _container_config(self) -> dict[str, list[str]]:
        from ketch._image_helpers import container_config

        steps = [layer for layer in self._layers if isinstance(layer, _Step)]
        return container_config((s.kind, s.to_dict()) for s in steps)

    # -- output ----------------------------------------------------------------------

    def spec(self) -> dict[str, Any]:
        """Return a JSON-serialisable description: python_version, build steps and local files.

        Local files carry a sha256 of their current content, computed now.
        """
        steps: list[dict[str, Any]] = []
        files: list[dict[str, Any]] = []
        from ketch._image_helpers import CONFIG_STEP_KINDS

        for layer in self._layers:
            if isinstance(layer, _Step):
                if layer.kind not in CONFIG_STEP_KINDS:  # recorded only: nothing to build
                    steps.append(layer.to_dict())
                continue
            try:
                digest = hash_local_entry(Path(layer.local_path), layer.is_dir, layer.ignore)
            except OSError as exc:
                raise InvalidError(f"cannot read local path {layer.local_path!r}: {exc}") from exc
            entry: dict[str, Any] = {
                "local_path": layer.local_path,
                "remote_path": layer.remote_path,
                "kind": "dir" if layer.is_dir else "file",
                "copy": layer.copy,
                "ignore": list(layer.ignore),
                "sha256": digest,
                # Number of build steps before this entry: where a copy sits in the build.
                "position": len(steps),
            }
            if layer.python_module is not None:
                entry["python_module"] = layer.python_module
            files.append(entry)
        return {"python_version": self._python_version, "steps": steps, "files": files}

    def content_hash(self) -> str:
        """Return the image's build content address (sha256 hex); copy=False files do not count."""
        return hash_build_spec(self.spec())


def _in_container() -> bool:
    """Inside a container the app module is imported again, image definitions included;
    they must not look for the client's local files there."""
    return "KETCH_CONTAINER_ID" in os.environ
