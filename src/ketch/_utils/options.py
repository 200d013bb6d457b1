"""Validation of the keyword arguments of ``@app.function`` and ``@app.cls``."""

from __future__ import annotations

import math
import re
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeGuard

from ketch._utils.env_values import check_values
from ketch.exception import InvalidError, deprecation_warning, user_warning
from ketch.retries import Retries, retries_from
from ketch.secret import Secret

__all__ = [
    "DEFAULT_TIMEOUT",
    "MAX_TIMEOUT",
    "FunctionOptions",
    "parse_gpu",
    "validate_batched",
    "validate_concurrent",
    "validate_function_options",
]

DEFAULT_TIMEOUT = 300
MAX_TIMEOUT = 86_400
MAX_CONCURRENT_INPUTS = 1000
MAX_BATCH_SIZE = 1000
MAX_BATCH_WAIT_MS = 600_000
MAX_GPU_COUNT = 8


@dataclass(frozen=True)
class FunctionOptions:
    """The validated settings of one function (or class); defaults are Modal's."""

    image: Any = None
    secrets: tuple[Any, ...] = ()
    env: dict[str, str] | None = None
    gpu: str | list[str] | None = None
    cpu: float | tuple[float, float] | None = None
    memory: int | tuple[int, int] | None = None
    timeout: int = DEFAULT_TIMEOUT
    startup_timeout: int | None = None
    retries: Retries | None = None
    min_containers: int = 0
    max_containers: int | None = None
    buffer_containers: int = 0
    scaledown_window: int = 60
    serialized: bool = False
    name: str | None = None
    schedule: Any = None
    volumes: dict[str, Any] = field(default_factory=dict)
    include_source: bool | None = None
    enable_memory_snapshot: bool = False
    block_network: bool = False
    max_inputs: int = 1
    target_inputs: int | None = None
    batch_max_size: int | None = None
    batch_wait_ms: int | None = None
    is_generator: bool = False
    is_web: bool = False
    inputs_per_container: int | None = None  # retire a container after this many inputs

    @property
    def effective_startup_timeout(self) -> int:
        """Seconds a container may take to start: ``startup_timeout``, else ``timeout``."""
        return self.startup_timeout if self.startup_timeout is not None else self.timeout


# Keywords that map one to one onto a FunctionOptions field.
_DIRECT = (
    "image",
    "secrets",
    "env",
    "gpu",
    "cpu",
    "memory",
    "timeout",
    "startup_timeout",
    "retries",
    "min_containers",
    "max_containers",
    "buffer_containers",
    "scaledown_window",
    "serialized",
    "name",
    "schedule",
    "volumes",
    "include_source",
    "enable_memory_snapshot",
    "block_network",
    "is_generator",
)

# Modal parameters that do not apply to ketch: accepted so scripts run, with a warning.
_NO_EFFECT: dict[str, str] = {
    "region": "containers run where the ketch backend places them",
    "cloud": "containers run where the ketch backend places them",
    "nonpreemptible": "ketch does not preempt containers",
    "proxy": "containers reach the network as the host does",
    "i6pn": "containers reach the network as the host does",
    "ephemeral_disk": "containers use the host's disk",
    "restrict_modal_access": "containers reach only their own inputs and outputs anyway",
    "allow_cross_region_volumes": "there are no regions",
    "experimental_options": "there are no experimental options",
}

# Old name -> (new name, date it was deprecated).
_RENAMED: dict[str, tuple[str, tuple[int, int, int]]] = {
    "keep_warm": ("min_containers", (2025, 2, 24)),
    "concurrency_limit": ("max_containers", (2025, 2, 24)),
    "container_idle_timeout": ("scaledown_window", (2025, 2, 24)),
    "allow_concurrent_inputs": ("max_inputs", (2025, 4, 9)),
}

# Modal parameters whose effect ketch cannot provide: fine when empty, refused otherwise.
_REFUSED_IF_SET: dict[str, str] = {
    "mounts": "add local files to the image with Image.add_local_dir / add_local_file / "
    "add_local_python_source instead",
    "network_file_systems": "use volumes={path: ketch.Volume.from_name(...)} instead",
    "cloud_bucket_mounts": "cloud buckets are not mounted; copy the data into the image or "
    "read it over the network",
}

# Modal's way of retiring a container after N inputs (fresh state per input when 1).
_RETIRE_AFTER = ("single_use_containers", "max_inputs")

_KNOWN = frozenset((*_DIRECT, *_NO_EFFECT, *_RENAMED, *_REFUSED_IF_SET, *_RETIRE_AFTER))
_SUGGESTIONS = sorted((*_DIRECT, *_NO_EFFECT, *_RENAMED, *_RETIRE_AFTER))

_GPU_RE = re.compile(r"^(?P<type>[A-Za-z0-9-]+!?)(?::(?P<count>[0-9]+))?$")

_WARNED: set[str] = set()
_WARNED_LOCK = threading.Lock()


def _warn_once_per_process(message: str) -> None:
    # Messages carry no values, so one message stands for one parameter.
    with _WARNED_LOCK:
        if message in _WARNED:
            return
        _WARNED.add(message)
    user_warning(message)


def _is_number(value: object) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _int_in(name: str, value: object, low: int, high: int | None = None) -> int:
    bounds = f"between {low} and {high}" if high is not None else f"at least {low}"
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidError(f"{name} must be an int {bounds}, got {value!r}")
    if value < low or (high is not None and value > high):
        raise InvalidError(f"{name} must be {bounds}, got {value}")
    return value


# Durations are kept in whole seconds; a fraction is rounded up so a limit is never shortened.


def _timeout(value: object) -> int:
    if value is None:
        raise InvalidError(
            f"timeout must be between 1 and {MAX_TIMEOUT} seconds; None is not allowed "
            f"(leave it out for the default of {DEFAULT_TIMEOUT} s)"
        )
    if not _is_number(value) or not 1 <= value <= MAX_TIMEOUT:
        raise InvalidError(f"timeout must be between 1 and {MAX_TIMEOUT} seconds, got {value!r}")
    return math.ceil(value)


def _positive_seconds(name: str, value: object) -> int:
    if not _is_number(value) or not 0 < value <= MAX_TIMEOUT:
        raise InvalidError(
            f"{name} must be a number of seconds above 0 and at most {MAX_TIMEOUT}, got {value!r}"
        )
    return math.ceil(value)


def _bool(name: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise InvalidError(f"{name} must be True or False, got {value!r}")
    return value


def _gpu_one(value: object) -> str:
    if not isinstance(value, str):
        raise InvalidError(f"gpu must be a string such as 'any', 'A100' or 'H100:2', got {value!r}")
    m = _GPU_RE.match(value.strip())
    if m is None:
        raise InvalidError(
            f"invalid gpu {value!r}: write 'any', '<TYPE>' or '<TYPE>:<COUNT>', "
            "e.g. 'A10G' or 'H100:2'"
        )
    gpu_type, count = m["type"], m["count"]
    if count is not None and not 1 <= int(count) <= MAX_GPU_COUNT:
        raise InvalidError(
            f"invalid gpu {value!r}: the count must be between 1 and {MAX_GPU_COUNT}"
        )
    # Upper case so the scheduler compares one spelling ("a100" and "A100" are the same card).
    normalized = "any" if gpu_type.lower() == "any" else gpu_type.upper()
    return normalized if count is None else f"{normalized}:{int(count)}"


def parse_gpu(value: object) -> str | list[str] | None:
    """A `gpu=` value checked and normalized (None: no GPU)."""
    if value is None:
        return None
    if isinstance(value, list | tuple):
        if not value:
            raise InvalidError("gpu must not be an empty list; leave it out for no GPU")
        return [_gpu_one(v) for v in value]
    return _gpu_one(value)


def _cpu(value: object) -> float | tuple[float, float] | None:
    if value is None:
        return None
    if isinstance(value, tuple | list):
        if len(value) != 2 or not all(_is_number(v) for v in value):
            raise InvalidError(f"cpu must be a number or a (request, limit) pair, got {value!r}")
        request, limit = float(value[0]), float(value[1])
        if not 0 < request <= limit or not math.isfinite(limit):
            raise InvalidError(f"cpu=(request, limit) needs 0 < request <= limit, got {value!r}")
        return (request, limit)
    if not _is_number(value) or not 0 < value < math.inf:
        raise InvalidError(f"cpu must be a positive number of cores, got {value!r}")
    return float(value)


def _memory(value: object) -> int | tuple[int, int] | None:
    if value is None:
        return None
    if isinstance(value, tuple | list):
        if len(value) != 2:
            raise InvalidError(f"memory must be MiB or a (request, limit) pair, got {value!r}")
        request = _int_in("memory request (MiB)", value[0], 1)
        limit = _int_in("memory limit (MiB)", value[1], 1)
        if request > limit:
            raise InvalidError(f"memory=(request, limit) needs request <= limit, got {value!r}")
        return (request, limit)
    return _int_in("memory (MiB)", value, 1)


def _image(value: object) -> Any:
    if value is None or hasattr(value, "spec"):
        return value
    raise InvalidError(
        f"image must be a ketch.Image (e.g. ketch.Image.debian_slim().pip_install(...)), "
        f"got {type(value).__name__}"
    )


def _secrets(value: object) -> tuple[Secret, ...]:
    if not isinstance(value, list | tuple):
        hint = "; wrap it in a list: secrets=[...]" if isinstance(value, Secret) else ""
        raise InvalidError(
            f"secrets must be a list of ketch.Secret, got {type(value).__name__}{hint}"
        )
    for item in value:
        if not isinstance(item, Secret):
            raise InvalidError(
                "secrets must contain ketch.Secret objects (Secret.from_name, from_dict, ...), "
                f"got {type(item).__name__}; for plain variables use env={{...}}"
            )
    return tuple(value)


def _volumes(value: object) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise InvalidError(
            f"volumes must be a dict of mount path to volume, got {type(value).__name__}"
        )
    from ketch._utils.volume_paths import check_mount_path, check_mount_set

    out: dict[str, Any] = {}
    for key, volume in value.items():
        path = check_mount_path(key)
        if path in out:
            raise InvalidError(f"volumes: {path!r} is mounted twice")
        out[path] = volume
    check_mount_set(list(out))
    return out


def _name(value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value or any(c.isspace() or c in "/:" for c in value):
        raise InvalidError(
            f"name must be a non-empty string without spaces, '/' or ':', got {value!r}"
        )
    return value


def _schedule(value: object) -> Any:
    if isinstance(value, str):
        raise InvalidError(
            f"schedule must be a ketch.Cron or ketch.Period, got the string {value!r}; "
            f"write schedule=ketch.Cron({value!r})"
        )
    from ketch.schedule import Schedule

    if value is not None and not isinstance(value, Schedule):
        raise InvalidError(f"schedule must be a ketch.Cron or ketch.Period, got {value!r}")
    return value


def validate_concurrent(
    max_inputs: int | None, target_inputs: int | None
) -> tuple[int, int | None]:
    """Check the arguments of ``@concurrent``: ``1 <= target_inputs <= max_inputs <= 1000``.
    Without ``max_inputs`` (Modal allows it), the target is also the limit."""
    if max_inputs is None:
        if target_inputs is None:
            raise InvalidError("@concurrent needs max_inputs=N (or target_inputs=N)")
        max_inputs = target_inputs
    n = _int_in("@concurrent: max_inputs", max_inputs, 1, MAX_CONCURRENT_INPUTS)
    if target_inputs is None:
        return n, None
    t = _int_in("@concurrent: target_inputs", target_inputs, 1, MAX_CONCURRENT_INPUTS)
    if t > n:
        raise InvalidError(
            f"@concurrent: target_inputs ({t}) must not exceed max_inputs ({n}); "
            "target_inputs is what the autoscaler aims for, max_inputs the hard limit"
        )
    return n, t


def validate_batched(max_batch_size: int, wait_ms: int) -> tuple[int, int]:
    """Check the arguments of ``@batched``: a size of 1..1000 and a wait of 0..600000 ms."""
    size = _int_in("@batched: max_batch_size", max_batch_size, 1, MAX_BATCH_SIZE)
    wait = _int_in("@batched: wait_ms", wait_ms, 0, MAX_BATCH_WAIT_MS)
    return size, wait


def _given(values: Mapping[str, Any], key: str, default: Any) -> Any:
    # Modal's signatures default most parameters to None, so an explicit None means "default".
    value = values.get(key)
    return default if value is None else value


def _suggestion_text(name: str) -> str:
    if name == "allow_concurrent_inputs":
        return "@concurrent(max_inputs=...)"
    return repr(_RENAMED[name][0] if name in _RENAMED else name)


def _reject_unknown(raw: Mapping[str, Any], where: str) -> None:
    unknown = [k for k in raw if k not in _KNOWN and not k.startswith("_experimental_")]
    if not unknown:
        return
    import difflib  # only on the error path: user containers import this module

    problems = []
    for key in unknown:
        # A near miss of an old name is pointed at its replacement.
        close = difflib.get_close_matches(key, _SUGGESTIONS, n=3, cutoff=0.6)
        shown = dict.fromkeys(_suggestion_text(c) for c in close)
        hint = f" (did you mean {' or '.join(shown)}?)" if shown else ""
        problems.append(f"{key!r}{hint}")
    raise InvalidError(f"unknown keyword argument to {where}: " + ", ".join(problems))


def validate_function_options(
    raw: dict[str, Any],
    *,
    is_generator: bool,
    is_web: bool,
    warn_once: Callable[[str], None] | None = None,
    concurrent: tuple[int, int | None] | None = None,
    batched: tuple[int, int] | None = None,
    where: str = "@app.function",
) -> FunctionOptions:
    """Turn the keywords a user passed to a function decorator into ``FunctionOptions``.

    ``raw`` holds only the keywords the user actually passed. ``concurrent`` and ``batched``
    are the arguments of ``@concurrent`` / ``@batched`` when those decorators are present.
    Parameters that do not apply to ketch are reported through ``warn_once`` (by default a
    ``UserWarning`` once per parameter per process); deprecated names are translated with a
    dated :class:`~ketch.exception.KetchDeprecationWarning`. Every problem raises
    :class:`~ketch.exception.InvalidError`.
    """
    if not isinstance(raw, Mapping):
        raise TypeError(f"raw must be a dict, got {type(raw).__name__}")
    _reject_unknown(raw, where)
    warn = warn_once if warn_once is not None else _warn_once_per_process
    values = dict(raw)

    for old, (new, date) in _RENAMED.items():
        if old not in values:
            continue
        old_value = values.pop(old)
        if old_value is None:
            continue
        if old == "allow_concurrent_inputs":
            if concurrent is not None:
                raise InvalidError(
                    "allow_concurrent_inputs and @concurrent both set the concurrency; "
                    "keep only @concurrent(max_inputs=...)"
                )
            deprecation_warning(
                date,
                "allow_concurrent_inputs is deprecated; decorate the function with "
                "@ketch.concurrent(max_inputs=...) instead",
            )
            concurrent = validate_concurrent(
                _int_in("allow_concurrent_inputs", old_value, 1, MAX_CONCURRENT_INPUTS), None
            )
            continue
        if new in values:
            raise InvalidError(f"{old} and {new} are the same setting; pass only {new}=")
        deprecation_warning(date, f"{old} is deprecated; use {new}= instead")
        values[new] = old_value

    inputs_per_container = None
    if values.pop("single_use_containers", None):
        inputs_per_container = 1
    retire = values.pop("max_inputs", None)
    if retire is not None:
        inputs_per_container = _int_in("max_inputs", retire, 1)

    for key in sorted(values):
        value = values[key]
        if key in _NO_EFFECT or key.startswith("_experimental_"):
            values.pop(key)
            # Modal's own defaults (None, False, empty) mean the user asked for nothing.
            if value is None or value is False or (isinstance(value, list | dict) and not value):
                continue
            reason = _NO_EFFECT.get(key, "experimental Modal options are not supported")
            warn(f"{key}= has no effect on ketch and is ignored: {reason}")
        elif key in _REFUSED_IF_SET:
            values.pop(key)
            if value:
                raise InvalidError(f"{key}= is not supported by ketch; {_REFUSED_IF_SET[key]}")

    timeout = _timeout(values["timeout"]) if "timeout" in values else DEFAULT_TIMEOUT
    startup = values.get("startup_timeout")
    startup_timeout = None if startup is None else _positive_seconds("startup_timeout", startup)

    generator_override = values.get("is_generator")
    if generator_override is not None:
        is_generator = _bool("is_generator", generator_override)

    retries = retries_from(values.get("retries"))
    if retries is not None and is_web:
        raise InvalidError(
            "retries are not supported on web endpoints (a request cannot be replayed "
            "safely); remove retries= and retry in the client if needed"
        )
    if retries is not None and is_generator:
        raise InvalidError(
            "retries are not supported on generator functions (items already yielded "
            "cannot be taken back); remove retries="
        )

    min_containers = _int_in("min_containers", _given(values, "min_containers", 0), 0)
    max_raw = values.get("max_containers")
    max_containers = None if max_raw is None else _int_in("max_containers", max_raw, 1)
    buffer_containers = _int_in("buffer_containers", _given(values, "buffer_containers", 0), 0)
    if max_containers is not None and max_containers < min_containers:
        raise InvalidError(
            f"max_containers ({max_containers}) must be at least min_containers "
            f"({min_containers}); raise max_containers or lower min_containers"
        )
    scaledown_window = _positive_seconds("scaledown_window", _given(values, "scaledown_window", 60))

    max_inputs, target_inputs = concurrent if concurrent is not None else (1, None)
    max_inputs, target_inputs = validate_concurrent(max_inputs, target_inputs)
    batch_max_size: int | None = None
    batch_wait_ms: int | None = None
    if batched is not None:
        batch_max_size, batch_wait_ms = validate_batched(*batched)
        if concurrent is not None:
            raise InvalidError(
                "@batched cannot be combined with @concurrent or allow_concurrent_inputs; "
                "use one of them"
            )
        if is_web:
            raise InvalidError("@batched cannot be used on a web endpoint")
        if is_generator:
            raise InvalidError("@batched cannot be used on a generator function")

    env_raw = values.get("env")
    env = None if env_raw is None else check_values(env_raw, "env")
    include_raw = values.get("include_source")
    include_source = None if include_raw is None else _bool("include_source", include_raw)

    return FunctionOptions(
        image=_image(values.get("image")),
        secrets=_secrets(_given(values, "secrets", ())),
        env=env,
        gpu=parse_gpu(values.get("gpu")),
        cpu=_cpu(values.get("cpu")),
        memory=_memory(values.get("memory")),
        timeout=timeout,
        startup_timeout=startup_timeout,
        retries=retries,
        min_containers=min_containers,
        max_containers=max_containers,
        buffer_containers=buffer_containers,
        scaledown_window=scaledown_window,
        serialized=_bool("serialized", _given(values, "serialized", False)),
        name=_name(values.get("name")),
        schedule=_schedule(values.get("schedule")),
        volumes=_volumes(_given(values, "volumes", {})),
        include_source=include_source,
        enable_memory_snapshot=_bool(
            "enable_memory_snapshot", _given(values, "enable_memory_snapshot", False)
        ),
        block_network=_bool("block_network", _given(values, "block_network", False)),
        max_inputs=max_inputs,
        target_inputs=target_inputs,
        batch_max_size=batch_max_size,
        batch_wait_ms=batch_wait_ms,
        is_generator=is_generator,
        is_web=is_web,
        inputs_per_container=inputs_per_container,
    )
