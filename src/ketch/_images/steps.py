"""An image spec's steps as Dockerfile instructions: what the root-filesystem builder runs.

`apt_install`, `run_commands`, `pip_install`, `env`, `workdir` and copied local files all
become the same typed instructions a Dockerfile gives, so there is one way to build.
"""

from __future__ import annotations

import json
import re
import shlex
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from ketch._images import conda
from ketch._images.bwrap import DEFAULT_PATH
from ketch._images.context import context_digest, local_entry_plan
from ketch._images.dockerfile import Copy, Env, From, Instruction, Run, Workdir, parse
from ketch._images.function_step import StepExtra, function_op
from ketch._images.python_dist import add_python_ops, interpreter
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
    "registry_step",
]

# Steps that need a root filesystem of their own (the rest also build as a uv venv).
ROOTFS_STEPS = frozenset(
    {"apt_install", "run_commands", "dockerfile_commands", "from_registry", "run_function"}
    | {"micromamba", "micromamba_install"}
)
# Debian releases ketch builds on, and the Python each one ships.
DEBIAN_PYTHON = {"bookworm": "3.11", "trixie": "3.13"}
_DEBIAN_ALIASES = {"bookworm": "bookworm", "12": "bookworm", "trixie": "trixie", "13": "trixie"}
_DEBIAN_REPOS = ("debian", "library/debian", "docker.io/library/debian")
_DEBIAN_PYTHON_BIN = "/usr/bin/python3"

# Makes the bottom layer for a spec step like {"type": "from_registry", ...}: the hook
# through which images unpacked from a registry become a base.
BaseFactory = Callable[[Mapping[str, Any]], BaseSource]
# What a run_function step is lent while it runs (see function_step): (step, origin) -> it.
ExtraFactory = Callable[[Mapping[str, Any], str], StepExtra]


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
        shown = {"gpu": step["gpu"]} if step.get("gpu") else {}
        return describe_call(kind, step.get("commands", []), shown)
    if kind == "apt_install":
        return describe_call(kind, step.get("packages", []), {})
    if kind == "from_registry":
        shown = {"add_python": step["add_python"]} if step.get("add_python") else {}
        return describe_call(kind, [step.get("ref")], shown)
    if kind == "env":
        return describe_call(kind, [step.get("vars", {})], {})
    if kind == "workdir":
        return describe_call(kind, [step.get("path")], {})
    if kind == "micromamba":
        return describe_call(kind, [], {"python_version": step.get("python_version")})
    if kind == "micromamba_install":
        shown = {"channels": step["channels"]} if step.get("channels") else {}
        return describe_call(kind, step.get("specs", []), shown)
    if kind == "run_function":
        gpu = f", gpu={json.dumps(step['gpu'])}" if step.get("gpu") else ""
        return f"run_function({step.get('name')}{gpu})"
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


def registry_step(
    tag: object,
    secret: object,
    add_python: object,
    setup: object,
    force_build: object,
    version_re: re.Pattern[str],
) -> tuple[str, dict[str, Any]]:
    """Image.from_registry's arguments checked: the image's Python version and its step."""
    from ketch.secret import Secret

    where = "Image.from_registry"
    if not isinstance(tag, str) or not tag or any(c.isspace() for c in tag):
        raise InvalidError(f"{where}: tag must be an image name, got {tag!r}")
    if add_python is not None and (
        not isinstance(add_python, str) or not version_re.fullmatch(add_python)
    ):
        raise InvalidError(f'{where}: add_python must look like "3.X", got {add_python!r}')
    if not isinstance(force_build, bool):
        raise InvalidError(f"{where}: force_build must be a bool, got {force_build!r}")
    name = environment = None
    if secret is not None:
        if not isinstance(secret, Secret) or secret._kind != "named":
            # Inline values would become part of the image's spec, which is stored and
            # hashed; a named secret's values are read by the server when it pulls.
            raise InvalidError(
                f"{where}: secret must be a Secret.from_name(...) stored on the server (ketch "
                "secret create NAME REGISTRY_USERNAME=... REGISTRY_PASSWORD=...)"
            )
        ref = secret.spec()
        name, environment = ref["name"], ref["environment"]
    commands = list(setup) if isinstance(setup, list | tuple) else None
    if commands is None or not all(isinstance(c, str) for c in commands):
        raise InvalidError(f"{where}: setup_dockerfile_commands must be a list of strings")
    for instr in parse("\n".join(commands), where=f"{where} setup_dockerfile_commands"):
        if isinstance(instr, From):
            raise InvalidError(f"{where} setup_dockerfile_commands: FROM is not allowed there")
    version = add_python or f"{sys.version_info.major}.{sys.version_info.minor}"
    params = {
        "ref": tag,
        "secret": name,
        "secret_environment": environment,
        "add_python": add_python,
        "setup_dockerfile_commands": commands,
    }
    return version, params


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


def _uv_pip(
    step: Mapping[str, Any], python: str = _DEBIAN_PYTHON_BIN
) -> tuple[list[str], list[tuple[str, str]]]:
    # uv (the server's own binary, bound in) rather than the image's pip: the same resolver
    # and options as venv images, no pip needed in the image, and a download cache that
    # survives between builds.
    argv = ["/tmp/.ketch/uv", "pip", "install", "--system", "--break-system-packages"]
    argv += ["--python", python]
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
    return factory({"type": "from_registry", "ref": ref.image, "python_version": version})


def _gpu_request(step: Mapping[str, Any]) -> str | tuple[str, ...] | None:
    gpu = step.get("gpu")
    return tuple(gpu) if isinstance(gpu, list) else gpu


def plan(
    spec: Mapping[str, Any],
    factories: Mapping[str, BaseFactory] | None = None,
    extras: ExtraFactory | None = None,
) -> tuple[BaseSource, list[Op]]:
    """Turn a root-filesystem image spec into its base and the ops the builder runs
    (`extras`: how run_function steps get their secrets, volumes and ketch's runtime)."""
    factories = factories or {}
    version = str(spec["python_version"])
    steps = list(spec.get("steps", []))
    copied = [f for f in spec.get("files", []) if f["copy"]]
    base: BaseSource | None = None
    ops: list[Op] = []
    env = {"PATH": DEFAULT_PATH}
    python = _DEBIAN_PYTHON_BIN
    added = _added_python(version, steps)
    if added is not None:
        # debian_slim with a Python Debian does not ship: Debian's base, and that Python
        # copied in first (from a uv-managed interpreter on this server), as add_python does.
        ops.extend(add_python_ops(version, f'debian_slim(python_version="{version}")'))
        python = added
        base = DebianBase(_PYTHONLESS_SUITE, python=added)
    for index, step in enumerate([*steps, None]):
        for entry in copied:
            if entry["position"] == index:
                instr = Copy(sources=(entry["local_path"],), dest=entry["remote_path"])
                ops.append(Op(instr, describe_files(entry), plan=local_entry_plan(entry)))
        if step is None:
            break
        kind = step["type"]
        origin = describe_step(step)
        if kind == "from_registry" and kind not in factories:
            raise InvalidError(f"{origin}: this server cannot pull images from registries")
        if kind in factories and index == 0:
            base = factories[kind]({**step, "python_version": version})
            if kind == "from_registry":
                python = _registry_ops(step, ops, origin)
        elif kind in factories:
            raise InvalidError(f"{origin} must be the first step of an image")
        elif kind == "apt_install":
            ops.append(Op(Run(command=_apt(step["packages"])), origin))
        elif kind == "run_commands":
            gpu = _gpu_request(step)
            ops.extend(Op(Run(command=c), origin, gpu=gpu) for c in step["commands"])
        elif kind in ("pip_install", "uv_pip_install"):
            argv, inputs = _uv_pip(step, python)
            ops.append(Op(Run(argv=tuple(argv)), origin, inputs=tuple(inputs), uv=True))
        elif kind == "env":
            ops.append(Op(Env(vars=tuple(step["vars"].items())), origin))
            env.update(step["vars"])
        elif kind == "workdir":
            ops.append(Op(Workdir(path=step["path"]), origin))
        elif kind == "dockerfile_commands":
            base = _dockerfile_ops(step, env, ops, base, version, factories)
        elif kind in ("micromamba", "micromamba_install"):
            if extras is None:
                raise InvalidError(f"{origin}: this server cannot install conda packages")
            if kind == "micromamba":
                if index != 0:
                    raise InvalidError(f"{origin} must be the first step of an image")
                python = conda.PYTHON
                base = DebianBase(_PYTHONLESS_SUITE, python=conda.PYTHON)
            ops.extend(conda.conda_ops(step, origin, extras(step, origin)))
        elif kind == "run_function":
            if extras is None:
                raise InvalidError(f"{origin}: this server cannot run functions in a build")
            op = function_op(step, python, origin, extras(step, origin))
            ops.append(replace(op, gpu=_gpu_request(step)))
        else:
            raise InvalidError(f"unknown image step type {kind!r}")
    if base is None:
        first = next(s for s in steps if s["type"] in ROOTFS_STEPS)
        base = _base_for(version, None, factories, describe_step(first))
    return base, ops


# The Debian a debian_slim image with an added Python builds on.
_PYTHONLESS_SUITE = "bookworm"


def _added_python(version: str, steps: Sequence[Mapping[str, Any]]) -> str | None:
    """The interpreter to add to a Debian image whose Python version Debian does not
    have; None when Debian has it or the image brings its own base (a registry, FROM)."""
    if version in DEBIAN_PYTHON.values() or not steps:
        return None
    if steps[0].get("type") in ("from_registry", "micromamba"):
        return None
    for step in steps:
        if step.get("type") == "dockerfile_commands" and any(
            str(line).lstrip().upper().startswith("FROM ") for line in step.get("commands", [])
        ):
            return None
    return interpreter(version)


def _registry_ops(step: Mapping[str, Any], ops: list[Op], origin: str) -> str:
    """The setup commands and the added Python of a from_registry step, as Modal runs them:
    setup first, so that they can make the image able to take a Python. Returns what
    later pip steps install into."""
    setup = [str(c) for c in step.get("setup_dockerfile_commands") or []]
    if setup:
        where = f"{origin} setup_dockerfile_commands"
        for instr in parse("\n".join(setup), where=where):
            if isinstance(instr, From):
                raise InvalidError(f"{where} line {instr.line}: FROM is not allowed there")
            ops.append(Op(instr, f"{where} line {instr.line}"))
    add_python = step.get("add_python")
    if not add_python:
        # The image's own python3, found on its PATH when uv runs in the image.
        return "python3"
    ops.extend(add_python_ops(str(add_python), origin))
    return interpreter(str(add_python))


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
