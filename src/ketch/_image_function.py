"""Image.run_function's arguments checked and turned into a build step: the function and
its arguments pickled by value, its secrets and volumes as references the server resolves."""

from __future__ import annotations

import base64
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import cloudpickle

from ketch._image_helpers import build_gpu
from ketch.exception import InvalidError

if TYPE_CHECKING:
    from ketch.image import Image
    from ketch.secret import Secret

__all__ = ["DEFAULT_TIMEOUT", "run_function", "run_function_step"]

DEFAULT_TIMEOUT = 60 * 60  # Modal's: a build step may download a model
_MAX_TIMEOUT = 24 * 60 * 60
_WHERE = "Image.run_function"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _secret_refs(secrets: object) -> list[dict[str, Any]]:
    from ketch.secret import Secret

    if not isinstance(secrets, list | tuple):
        raise InvalidError(f"{_WHERE}: secrets must be a list of Secrets, got {secrets!r}")
    refs = []
    for secret in secrets:
        if not isinstance(secret, Secret):
            raise InvalidError(f"{_WHERE}: secrets must be ketch.Secret objects, got {secret!r}")
        spec = secret.spec()
        if spec["kind"] == "inline":
            # Sent once to the server, which keeps the values encrypted and puts a keyed
            # digest of them in the image spec in their place.
            refs.append({"values": dict(spec["values"])})
            continue
        refs.append(
            {
                "name": spec["name"],
                "environment": spec["environment"],
                "required_keys": spec["required_keys"],
            }
        )
    return refs


def _volume_refs(volumes: Mapping[Any, Any]) -> list[dict[str, Any]]:
    from ketch._utils.volume_paths import check_mount_path, check_mount_set

    if not isinstance(volumes, Mapping):
        raise InvalidError(f"{_WHERE}: volumes must be a dict of mount path -> Volume")
    refs = []
    for key, vol in volumes.items():
        mount = check_mount_path(str(key))
        # By what it has rather than isinstance: the image layer does not import the SDK.
        spec = vol._spec() if type(vol).__name__ == "Volume" and hasattr(vol, "_spec") else None
        if spec is None:
            raise InvalidError(
                f"{_WHERE}: volumes[{mount!r}] must be a ketch.Volume (Volume.from_name(...)), "
                f"got {type(vol).__name__}"
            )
        if not spec.get("name") and not spec.get("volume_id"):
            raise InvalidError(f"{_WHERE}: volumes[{mount!r}] is an ephemeral volume, closed")
        refs.append({"mount": mount, **spec})
    check_mount_set([r["mount"] for r in refs])
    return sorted(refs, key=lambda r: str(r["mount"]))


def _env(env: object) -> dict[str, str]:
    if env is None:
        return {}
    if not isinstance(env, Mapping):
        raise InvalidError(f"{_WHERE}: env must be a dict of strings, got {env!r}")
    out: dict[str, str] = {}
    for key, value in env.items():
        if value is None:
            continue  # Modal's meaning: the variable is not set
        if not isinstance(key, str) or not key or "=" in key or not isinstance(value, str):
            raise InvalidError(f"{_WHERE}: env expects string keys and values, got {key!r}")
        out[key] = value
    return out


def _timeout(timeout: object) -> int:
    if isinstance(timeout, bool) or not isinstance(timeout, int | float):
        raise InvalidError(f"{_WHERE}: timeout must be a number of seconds, got {timeout!r}")
    if not 1 <= timeout <= _MAX_TIMEOUT:
        raise InvalidError(f"{_WHERE}: timeout must be between 1 and {_MAX_TIMEOUT} seconds")
    return int(timeout)


def run_function_step(
    fn: Callable[..., Any],
    *,
    env: Mapping[str, str | None] | None,
    secrets: Sequence[object],
    volumes: Mapping[Any, Any],
    network_file_systems: Mapping[Any, Any],
    gpu: object,
    timeout: object,
    force_build: bool,
    args: Sequence[Any],
    kwargs: Mapping[str, Any],
) -> dict[str, Any]:
    """The spec step of Image.run_function. The function travels pickled by value, so its
    code, and the globals it uses, are part of the image's hash: editing it reruns it."""
    from ketch._utils.payload import dumps_by_value

    if not callable(fn):
        raise InvalidError(f"{_WHERE} expects a function, got {fn!r}")
    request = build_gpu("run_function", gpu)
    if network_file_systems:
        raise InvalidError(
            f"{_WHERE}(network_file_systems=...) is not supported: ketch has no network file "
            "systems; use volumes={...}"
        )
    if not isinstance(args, list | tuple) or not isinstance(kwargs, Mapping):
        raise InvalidError(f"{_WHERE}: args must be a sequence and kwargs a dict")
    try:
        pickled = dumps_by_value(fn)
        arguments = cloudpickle.dumps((tuple(args), dict(kwargs)))
    except Exception as exc:
        raise InvalidError(f"{_WHERE}: cannot serialize {fn!r} or its arguments: {exc}") from exc
    step: dict[str, Any] = {
        "name": str(getattr(fn, "__qualname__", None) or getattr(fn, "__name__", "function")),
        "function": _b64(pickled),
        "args": _b64(arguments),
        "env": _env(env),
        "secrets": _secret_refs(secrets),
        "volumes": _volume_refs(volumes),
        "timeout": _timeout(timeout),
        # A fresh value at every definition: the step's hash never matches a cached one.
        "force": uuid.uuid4().hex if force_build else None,
    }
    if request is not None:
        step["gpu"] = request  # only then: steps without a GPU keep their hashes
    return step


def run_function(
    self: Image,
    raw_f: Callable[..., Any],
    *,
    env: Mapping[str, str | None] | None = None,
    secrets: Sequence[Secret] | None = None,
    volumes: Mapping[Any, Any] | None = None,
    network_file_systems: Mapping[Any, Any] | None = None,
    gpu: str | list[str] | None = None,
    cpu: float | None = None,
    memory: int | None = None,
    timeout: int = DEFAULT_TIMEOUT,
    cloud: str | None = None,
    region: str | Sequence[str] | None = None,
    force_build: bool = False,
    args: Sequence[Any] = (),
    kwargs: Mapping[str, Any] | None = None,
    include_source: bool = True,
) -> Image:
    """Run `raw_f(*args, **kwargs)` as a build step, inside the image being built: what it
    writes becomes a layer of the image, which every container then sees.

    It runs with the image's Python, as root with network, `env` and the values of
    `secrets` (stored secrets, Secret.from_name) in its environment and `volumes` mounted.
    The step is cached by the function's code, the globals it uses and its arguments, so a
    later build skips it until one of those changes. With `gpu=` it runs holding matching
    GPUs of the server's host, as a container would. `cpu`, `memory`, `cloud`, `region`
    and `include_source` are accepted for Modal compatibility: a build step runs on this
    machine, and the function travels pickled by value (modules it imports must be in the
    image). A root filesystem image, as `run_commands` makes one.
    """
    from ketch.image import _in_container

    if _in_container():
        return self  # built already; pickling the function again would be wasted work
    params = run_function_step(
        raw_f,
        env=env,
        secrets=secrets or (),
        volumes=volumes or {},
        network_file_systems=network_file_systems or {},
        gpu=gpu,
        timeout=timeout,
        force_build=bool(force_build),
        args=args,
        kwargs=kwargs or {},
    )
    return self._with_step("run_function", params)
