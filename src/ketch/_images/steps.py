"""An image spec's steps as Dockerfile instructions: what the root-filesystem builder runs.

`apt_install`, `run_commands`, `pip_install`, `env`, `workdir` and copied local files all
become the same typed instructions a Dockerfile gives, so there is one way to build.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ketch._images.bwrap import DEFAULT_PATH
from ketch._images.context import context_digest, local_entry_plan
from ketch._images.dockerfile import Copy, Env, From, Instruction, Run, Workdir, parse
from ketch._images.rootfs import BaseSource, DebianBase, Op
from ketch.exception import InvalidError

__all__ = [
    "DEBIAN_PYTHON",
    "ROOTFS_STEPS",
    "BaseFactory",
    "debian_suite",
    "describe_files",
    "describe_step",
    "dockerfile_step",
    "needs_rootfs",
    "plan",
]

# Steps that need a root filesystem of their own (the rest also build as a uv venv).
ROOTFS_STEPS = frozenset({"apt_install", "run_commands", "dockerfile_commands", "from_registry"})
# Debian releases ketch builds on, and the Python each one ships.
DEBIAN_PYTHON = {"bookworm": "3.11", "trixie": "3.13"}
_DEBIAN_ALIASES = {"bookworm": "bookworm", "12": "bookworm", "trixie": "trixie", "13": "trixie"}
_DEBIAN_REPOS = ("debian", "library/debian", "docker.io/library/debian")

# Makes the bottom layer for a spec step like {"type": "from_registry", ...}: the hook
# through which images unpacked from a registry become a base.
BaseFactory = Callable[[Mapping[str, Any]], BaseSource]


def describe_call(name: str, args: Iterable[object], kwargs: Mapping[str, object]) -> str:
    # json.dumps gives double-quoted strings, which read like the user's own source.
    parts = [json.dumps(a) for a in args]
    parts += [f"{k}={json.dumps(v)}" for k, v in kwargs.items()]
    return f"{name}({', '.join(parts)})"


def describe_step(step: Mapping[str, Any]) -> str:
    kind = str(step.get("type"))
    if kind in ("pip_install", "uv_pip_install"):
        kwargs: dict[str, object] = {}
        if step.get("requirements"):
            kwargs["requirements"] = [r["path"] for r in step["requirements"]]
        for key in ("index_url", "extra_index_url", "find_links"):
            if step.get(key):
                kwargs[key] = step[key]
        if step.get("pre"):
            kwargs["pre"] = True
        if step.get("extra_options"):
            kwargs["extra_options"] = step["extra_options"]
        return describe_call(kind, step.get("packages", []), kwargs)
    if kind in ("run_commands", "dockerfile_commands"):
        if step.get("dockerfile"):
            return describe_call("from_dockerfile", [step["dockerfile"]], {})
        return describe_call(kind, step.get("commands", []), {})
    if kind == "apt_install":
        return describe_call(kind, step.get("packages", []), {})
    if kind == "env":
        return describe_call(kind, [step.get("vars", {})], {})
    if kind == "workdir":
        return describe_call(kind, [step.get("path")], {})
    return kind


def describe_files(entry: Mapping[str, Any]) -> str:
    name = "add_local_dir" if entry["kind"] == "dir" else "add_local_file"
    if entry.get("python_module"):
        name = "add_local_python_source"
        return describe_call(name, [entry["python_module"]], {"copy": entry["copy"]})
    return describe_call(name, [entry["local_path"], entry["remote_path"]], {"copy": entry["copy"]})


def needs_rootfs(spec: Mapping[str, Any]) -> bool:
    return any(step.get("type") in ROOTFS_STEPS for step in spec.get("steps", []))


def debian_suite(ref: str) -> str | None:
    """The Debian suite a FROM reference names (debian:bookworm, debian:12-slim...), or None."""
    repo, _, tag = ref.rpartition(":")
    if repo not in _DEBIAN_REPOS:
        return None
    return _DEBIAN_ALIASES.get(tag.removesuffix("-slim"))


def _where(step: Mapping[str, Any]) -> str:
    return str(step["dockerfile"]) if step.get("dockerfile") else "dockerfile_commands"


def env_of(steps: Iterable[Mapping[str, Any]]) -> dict[str, str]:
    """The environment earlier steps give (for substitution in a later Dockerfile step)."""
    env = {"PATH": DEFAULT_PATH}
    for step in steps:
        if step.get("type") == "env":
            env.update(step["vars"])
        elif step.get("type") == "dockerfile_commands":
            for instr in _parse_step(step, env):
                if isinstance(instr, Env):
                    env.update(dict(instr.vars))
    return env


def _parse_step(step: Mapping[str, Any], env: Mapping[str, str]) -> list[Instruction]:
    return parse(
        "\n".join(step["commands"]),
        env=env,
        build_args=step.get("build_args") or {},
        where=_where(step),
    )


def dockerfile_step(
    commands: Sequence[str],
    *,
    context_dir: Path | None,
    build_args: Mapping[str, str],
    dockerfile: str | None,
    earlier: Sequence[Mapping[str, Any]],
    hash_context: bool = True,
) -> dict[str, Any]:
    """The spec step for Dockerfile lines, checked now (an unsupported instruction is an
    error where the image is defined) and with the content hash of every file it copies."""
    step: dict[str, Any] = {
        "commands": list(commands),
        "context_dir": None if context_dir is None else str(context_dir),
        "build_args": dict(build_args),
        "dockerfile": dockerfile,
    }
    instructions = _parse_step(step, env_of(earlier))
    for instr in instructions:
        if isinstance(instr, From) and earlier:
            raise InvalidError(
                f"{_where(step)} line {instr.line}: FROM must be the first step of an image"
            )
    digest = context_digest(instructions, context_dir, _where(step)) if hash_context else None
    step["context_sha256"] = digest
    if digest is None:
        step["context_dir"] = None  # nothing is copied: where it was defined does not matter
    return step


def _apt(packages: Sequence[str]) -> str:
    quoted = " ".join(shlex.quote(p) for p in packages)
    # The package lists and downloaded .debs are dropped so the layer keeps only packages.
    return (
        "apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y "
        f"--no-install-recommends {quoted} && apt-get clean && rm -rf /var/lib/apt/lists/*"
    )


def _uv_pip(step: Mapping[str, Any]) -> tuple[list[str], list[tuple[str, str]]]:
    # uv (the server's own binary, bound in) rather than the image's pip: the same resolver
    # and options as venv images, no pip needed in the image, and a download cache that
    # survives between builds.
    argv = ["/tmp/.ketch/uv", "pip", "install", "--system", "--break-system-packages"]
    argv += ["--python", "/usr/bin/python3"]
    if step.get("index_url"):
        argv += ["--index-url", step["index_url"]]
    if step.get("extra_index_url"):
        argv += ["--extra-index-url", step["extra_index_url"]]
    if step.get("find_links"):
        argv += ["--find-links", step["find_links"]]
    if step.get("pre"):
        argv.append("--prerelease=allow")
    inputs: list[tuple[str, str]] = []
    for i, req in enumerate(step.get("requirements", [])):
        inputs.append((f"requirements-{i}.txt", req["content"]))
        argv += ["-r", f"/tmp/.ketch/in/requirements-{i}.txt"]
    if step.get("extra_options"):
        argv += shlex.split(step["extra_options"])
    argv += list(step.get("packages", []))
    return argv, inputs


def _base_for(
    version: str, ref: From | None, factories: Mapping[str, BaseFactory], where: str
) -> BaseSource:
    if ref is None:
        suite = next((s for s, v in DEBIAN_PYTHON.items() if v == version), None)
        if suite is None:
            choices = ", ".join(f'"{v}" (Debian {s})' for s, v in DEBIAN_PYTHON.items())
            raise InvalidError(
                f'{where} is not supported on Image.debian_slim(python_version="{version}"): '
                "apt_install, run_commands and Dockerfile steps build on Debian's own Python, "
                f"which is {choices}; choose one of those"
            )
        return DebianBase(suite)
    suite = debian_suite(ref.image)
    if suite is not None:
        if DEBIAN_PYTHON[suite] != version:
            raise InvalidError(
                f"{where} line {ref.line}: FROM {ref.image} has Python {DEBIAN_PYTHON[suite]}, "
                f"but the image was defined with python_version {version!r}"
            )
        return DebianBase(suite)
    factory = factories.get("from_registry")
    if factory is None:
        raise InvalidError(
            f"{where} line {ref.line}: FROM {ref.image} is not supported: ketch builds "
            "Dockerfiles on Debian (FROM debian:bookworm or debian:trixie); for other "
            "images use Image.from_registry"
        )
    return factory({"type": "from_registry", "ref": ref.image})


def plan(
    spec: Mapping[str, Any], factories: Mapping[str, BaseFactory] | None = None
) -> tuple[BaseSource, list[Op]]:
    """Turn a root-filesystem image spec into its base and the ops the builder runs."""
    factories = factories or {}
    version = str(spec["python_version"])
    steps = list(spec.get("steps", []))
    copied = [f for f in spec.get("files", []) if f["copy"]]
    base: BaseSource | None = None
    ops: list[Op] = []
    env = {"PATH": DEFAULT_PATH}
    for index, step in enumerate([*steps, None]):
        for entry in copied:
            if entry["position"] == index:
                instr = Copy(sources=(entry["local_path"],), dest=entry["remote_path"])
                ops.append(Op(instr, describe_files(entry), plan=local_entry_plan(entry)))
        if step is None:
            break
        kind = step["type"]
        origin = describe_step(step)
        if kind in factories and index == 0:
            base = factories[kind](step)
        elif kind in factories:
            raise InvalidError(f"{origin} must be the first step of an image")
        elif kind == "apt_install":
            ops.append(Op(Run(command=_apt(step["packages"])), origin))
        elif kind == "run_commands":
            ops.extend(Op(Run(command=c), origin) for c in step["commands"])
        elif kind in ("pip_install", "uv_pip_install"):
            argv, inputs = _uv_pip(step)
            ops.append(Op(Run(argv=tuple(argv)), origin, inputs=tuple(inputs), uv=True))
        elif kind == "env":
            ops.append(Op(Env(vars=tuple(step["vars"].items())), origin))
            env.update(step["vars"])
        elif kind == "workdir":
            ops.append(Op(Workdir(path=step["path"]), origin))
        elif kind == "dockerfile_commands":
            base = _dockerfile_ops(step, env, ops, base, version, factories)
        else:
            raise InvalidError(f"unknown image step type {kind!r}")
    if base is None:
        first = next(s for s in steps if s["type"] in ROOTFS_STEPS)
        base = _base_for(version, None, factories, describe_step(first))
    return base, ops


def _dockerfile_ops(
    step: Mapping[str, Any],
    env: dict[str, str],
    ops: list[Op],
    base: BaseSource | None,
    version: str,
    factories: Mapping[str, BaseFactory],
) -> BaseSource | None:
    where = _where(step)
    instructions = _parse_step(step, env)
    context = Path(step["context_dir"]) if step.get("context_dir") else None
    if context_digest(instructions, context, where) != step.get("context_sha256"):
        raise InvalidError(
            f"{describe_step(step)}: files it copies from {context} changed after the image "
            "was defined (their content hash no longer matches); deploy or run the app "
            "again to pick up the new content"
        )
    if any(isinstance(i, From) for i in instructions):
        if ops or base is not None:
            raise InvalidError(f"{where}: FROM must be the first step of an image")
        # What comes before FROM (global ARGs) is already folded into FROM by the parser.
        while not isinstance(instructions[0], From):
            instructions.pop(0)
        ref = instructions.pop(0)
        assert isinstance(ref, From)
        base = _base_for(version, ref, factories, where)
    for instr in instructions:
        if isinstance(instr, Env):
            env.update(dict(instr.vars))
        ops.append(Op(instr, f"{where} line {instr.line}", context=context))
    return base
