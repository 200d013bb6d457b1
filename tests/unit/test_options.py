"""Validation of function decorator keywords into FunctionOptions."""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable
from pathlib import PurePosixPath
from typing import Any

import pytest

from ketch._utils import options
from ketch._utils.options import (
    FunctionOptions,
    validate_batched,
    validate_concurrent,
    validate_function_options,
)
from ketch.exception import InvalidError, KetchDeprecationWarning
from ketch.retries import Retries
from ketch.secret import Secret


def _opts(
    raw: dict[str, Any] | None = None,
    *,
    is_generator: bool = False,
    is_web: bool = False,
    warn_once: Callable[[str], None] | None = None,
    **extra: Any,
) -> FunctionOptions:
    collected: list[str] = []
    return validate_function_options(
        raw or {},
        is_generator=is_generator,
        is_web=is_web,
        warn_once=warn_once if warn_once is not None else collected.append,
        **extra,
    )


class _FakeImage:
    def spec(self) -> dict[str, Any]:
        return {}


@pytest.mark.spec("T1")
def test_defaults_are_modals() -> None:
    o = _opts()
    assert o == FunctionOptions()
    assert o.timeout == 300
    assert o.startup_timeout is None
    assert o.effective_startup_timeout == 300
    assert (o.min_containers, o.max_containers, o.buffer_containers) == (0, None, 0)
    assert o.scaledown_window == 60
    assert (o.max_inputs, o.target_inputs, o.batch_max_size, o.batch_wait_ms) == (
        1,
        None,
        None,
        None,
    )
    assert o.retries is None


@pytest.mark.spec("A3")
def test_unknown_keyword_names_close_matches() -> None:
    with pytest.raises(InvalidError, match=r"'timout' \(did you mean 'timeout'\?\)"):
        _opts({"timout": 10})
    with pytest.raises(InvalidError, match=r"'keepwarm' \(did you mean 'min_containers'\?\)"):
        _opts({"keepwarm": 1})
    with pytest.raises(InvalidError, match="'zzz'") as info:
        _opts({"zzz": 1})
    assert "did you mean" not in str(info.value)


@pytest.mark.spec("A3")
def test_unknown_keyword_message_names_the_decorator() -> None:
    with pytest.raises(InvalidError, match=r"@app\.cls"):
        _opts({"nope": 1}, where="@app.cls")


@pytest.mark.spec("T1")
@pytest.mark.parametrize(
    "value", [None, 0, 0.5, -1, 86_401, float("inf"), float("nan"), "10", True]
)
def test_timeout_outside_range_is_refused(value: object) -> None:
    with pytest.raises(InvalidError, match="timeout must be between 1 and 86400 seconds"):
        _opts({"timeout": value})


@pytest.mark.spec("T1")
def test_timeout_bounds_and_fractions() -> None:
    assert _opts({"timeout": 1}).timeout == 1
    assert _opts({"timeout": 86_400}).timeout == 86_400
    assert _opts({"timeout": 2.5}).timeout == 3, "a fraction is rounded up"


@pytest.mark.spec("T2")
def test_startup_timeout() -> None:
    o = _opts({"timeout": 10, "startup_timeout": 30})
    assert (o.startup_timeout, o.effective_startup_timeout) == (30, 30)
    assert _opts({"timeout": 10}).effective_startup_timeout == 10
    assert _opts({"startup_timeout": None}).startup_timeout is None
    for bad in (0, -5, 86_401, "5"):
        with pytest.raises(InvalidError, match="startup_timeout"):
            _opts({"startup_timeout": bad})


@pytest.mark.spec("R1")
def test_retries_int_and_object() -> None:
    assert _opts({"retries": 2}).retries == Retries(2, backoff_coefficient=1.0, initial_delay=1.0)
    policy = Retries(3, initial_delay=2)
    assert _opts({"retries": policy}).retries is policy
    assert _opts({"retries": 0}).retries is None
    with pytest.raises(InvalidError, match="retries"):
        _opts({"retries": 11})


@pytest.mark.spec("R7")
@pytest.mark.parametrize("flag", ["is_web", "is_generator"])
def test_retries_refused_on_web_and_generators(flag: str) -> None:
    kind = "web endpoints" if flag == "is_web" else "generator functions"
    kinds: dict[str, Any] = {flag: True}
    with pytest.raises(InvalidError, match=f"retries are not supported on {kind}"):
        _opts({"retries": 1}, **kinds)
    with pytest.raises(InvalidError):
        _opts({"retries": Retries(2)}, **kinds)
    assert _opts({"retries": 0}, **kinds).retries is None


@pytest.mark.spec("R7")
def test_is_generator_keyword_overrides_detection() -> None:
    assert _opts({"is_generator": True}).is_generator is True
    with pytest.raises(InvalidError, match="generator"):
        _opts({"is_generator": True, "retries": 1})


@pytest.mark.spec("A3")
def test_container_counts() -> None:
    o = _opts({"min_containers": 1, "max_containers": 4, "buffer_containers": 2})
    assert (o.min_containers, o.max_containers, o.buffer_containers) == (1, 4, 2)
    with pytest.raises(InvalidError, match=r"max_containers \(1\) must be at least min_containers"):
        _opts({"min_containers": 2, "max_containers": 1})
    for key, bad in [
        ("min_containers", -1),
        ("max_containers", 0),
        ("buffer_containers", -1),
        ("min_containers", 1.0),
        ("max_containers", True),
    ]:
        with pytest.raises(InvalidError, match=key):
            _opts({key: bad})
    # Modal's signatures default these to None.
    assert _opts({"min_containers": None, "buffer_containers": None}).min_containers == 0


@pytest.mark.spec("A3")
@pytest.mark.parametrize("value", [0, -1, "60", float("nan")])
def test_scaledown_window_must_be_positive(value: object) -> None:
    with pytest.raises(InvalidError, match="scaledown_window"):
        _opts({"scaledown_window": value})


@pytest.mark.spec("A2")
@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("region", "us-east"),
        ("cloud", "aws"),
        ("nonpreemptible", True),
        ("proxy", object()),
        ("i6pn", True),
        ("ephemeral_disk", 1024),
        ("_experimental_scheduler_placement", object()),
    ],
)
def test_parameters_without_effect_are_accepted_with_a_warning(key: str, value: object) -> None:
    said: list[str] = []
    o = _opts({key: value}, warn_once=said.append)
    assert o.max_inputs == 1, "Modal's max_inputs is not the concurrency limit"
    assert len(said) == 1
    assert said[0].startswith(f"{key}= has no effect on ketch")


@pytest.mark.spec("A2")
def test_retiring_containers_after_n_inputs_is_honoured() -> None:
    assert _opts({"single_use_containers": True}).inputs_per_container == 1
    o = _opts({"max_inputs": 3})
    assert (o.inputs_per_container, o.max_inputs) == (3, 1)
    assert _opts({}).inputs_per_container is None
    with pytest.raises(InvalidError, match="max_inputs"):
        _opts({"max_inputs": 0})


@pytest.mark.spec("A2")
def test_cloud_bucket_mounts_are_refused() -> None:
    with pytest.raises(InvalidError, match="cloud_bucket_mounts"):
        _opts({"cloud_bucket_mounts": {"/b": object()}})
    _opts({"cloud_bucket_mounts": {}})


@pytest.mark.spec("A2")
def test_default_values_of_ignored_parameters_do_not_warn() -> None:
    said: list[str] = []
    _opts({"region": None, "nonpreemptible": False, "i6pn": None}, warn_once=said.append)
    assert said == []


@pytest.mark.spec("A2")
def test_default_warning_is_a_user_warning_once_per_process(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(options, "_WARNED", set())
    with pytest.warns(UserWarning, match="region= has no effect") as record:
        validate_function_options({"region": "eu"}, is_generator=False, is_web=False)
    assert record[0].filename == __file__, "the warning points at the caller"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        validate_function_options({"region": "us"}, is_generator=False, is_web=False)


@pytest.mark.spec("A4")
@pytest.mark.parametrize(
    ("old", "new", "value", "date"),
    [
        ("keep_warm", "min_containers", 2, "2025-02-24"),
        ("concurrency_limit", "max_containers", 5, "2025-02-24"),
        ("container_idle_timeout", "scaledown_window", 30, "2025-02-24"),
    ],
)
def test_old_names_still_work_with_a_dated_warning(
    old: str, new: str, value: int, date: str
) -> None:
    with pytest.warns(KetchDeprecationWarning, match=f"^{date}: {old} is deprecated; use {new}="):
        o = _opts({old: value})
    assert getattr(o, new) == value
    with pytest.raises(InvalidError, match=f"{old} and {new} are the same setting"):
        _opts({old: value, new: value})


@pytest.mark.spec("A4")
def test_allow_concurrent_inputs_maps_to_max_inputs() -> None:
    with pytest.warns(KetchDeprecationWarning, match=r"^2025-04-09: allow_concurrent_inputs"):
        o = _opts({"allow_concurrent_inputs": 8})
    assert (o.max_inputs, o.target_inputs) == (8, None)
    with pytest.raises(InvalidError, match="@concurrent"):
        _opts({"allow_concurrent_inputs": 8}, concurrent=(4, None))
    with pytest.warns(KetchDeprecationWarning), pytest.raises(InvalidError):
        _opts({"allow_concurrent_inputs": 0})


@pytest.mark.spec("A4")
def test_old_name_set_to_none_is_ignored_silently() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert _opts({"keep_warm": None}).min_containers == 0


@pytest.mark.spec("S7")
@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, None),
        ("any", "any"),
        ("ANY:2", "any:2"),
        ("a100", "A100"),
        ("A100-80GB:8", "A100-80GB:8"),
        ("H100!", "H100!"),
        (["h100", "A100:2"], ["H100", "A100:2"]),
    ],
)
def test_gpu_accepted(value: object, expected: object) -> None:
    assert _opts({"gpu": value}).gpu == expected


@pytest.mark.spec("S7")
@pytest.mark.parametrize("value", ["", "A100:0", "A100:9", "A 100", "A100:x", [], ["A100", 3], 1])
def test_gpu_refused(value: object) -> None:
    with pytest.raises(InvalidError, match="gpu"):
        _opts({"gpu": value})


@pytest.mark.spec("S8")
def test_cpu_and_memory() -> None:
    o = _opts({"cpu": 2, "memory": 1024})
    assert (o.cpu, o.memory) == (2.0, 1024)
    o = _opts({"cpu": (0.5, 2), "memory": (512, 2048)})
    assert (o.cpu, o.memory) == ((0.5, 2.0), (512, 2048))
    bad_cpu: tuple[object, ...] = (0, -1, True, "2", (2, 1), (0, 1), (1,), float("inf"))
    for bad in bad_cpu:
        with pytest.raises(InvalidError, match="cpu"):
            _opts({"cpu": bad})
    bad_memory: tuple[object, ...] = (0, 1.5, True, (2048, 512), (0, 1), (1, 2, 3))
    for bad in bad_memory:
        with pytest.raises(InvalidError, match="memory"):
            _opts({"memory": bad})


@pytest.mark.spec("A10")
def test_image_secrets_and_env() -> None:
    image = _FakeImage()
    secret = Secret.from_dict({"A": "1"})
    o = _opts({"image": image, "secrets": [secret], "env": {"X": "1", "Y": None}})
    assert o.image is image
    assert o.secrets == (secret,)
    assert o.env == {"X": "1"}
    with pytest.raises(InvalidError, match=r"image must be a ketch\.Image"):
        _opts({"image": "python:3.11"})
    with pytest.raises(InvalidError, match=r"wrap it in a list"):
        _opts({"secrets": secret})
    with pytest.raises(InvalidError, match="env="):
        _opts({"secrets": [{"A": "1"}]})
    with pytest.raises(InvalidError, match="env"):
        _opts({"env": {"X": 1}})


@pytest.mark.spec("D3")
def test_volumes_mount_paths() -> None:
    vol = object()
    o = _opts({"volumes": {"/data": vol, PurePosixPath("/models/"): vol}})
    assert o.volumes == {"/data": vol, "/models": vol}
    for bad in ({"data": vol}, {"/": vol}, {"/a/../b": vol}, {1: vol}, ["/data"]):
        with pytest.raises(InvalidError, match="volumes"):
            _opts({"volumes": bad})
    with pytest.raises(InvalidError, match="mounted twice"):
        _opts({"volumes": {"/data": vol, "/data/": vol}})


def test_simple_fields() -> None:
    from ketch.schedule import Period

    sched = Period(seconds=5)
    o = _opts(
        {
            "serialized": True,
            "name": "worker",
            "schedule": sched,
            "include_source": False,
            "enable_memory_snapshot": True,
            "block_network": True,
        }
    )
    assert (o.serialized, o.name, o.schedule, o.include_source) == (True, "worker", sched, False)
    assert o.enable_memory_snapshot and o.block_network
    with pytest.raises(InvalidError, match=r"ketch\.Cron\('0 \* \* \* \*'\)"):
        _opts({"schedule": "0 * * * *"})
    with pytest.raises(InvalidError, match=r"ketch\.Cron or ketch\.Period"):
        _opts({"schedule": object()})
    for key, bad in [("serialized", 1), ("block_network", "yes"), ("include_source", 0)]:
        with pytest.raises(InvalidError, match=key):
            _opts({key: bad})
    for bad in ("", "two words", "a/b", 3):
        with pytest.raises(InvalidError, match="name"):
            _opts({"name": bad})


def test_parameters_ketch_cannot_honour_are_refused_when_set() -> None:
    assert _opts({"mounts": [], "network_file_systems": {}}) == FunctionOptions()
    with pytest.raises(InvalidError, match="add_local"):
        _opts({"mounts": [object()]})
    with pytest.raises(InvalidError, match="volumes="):
        _opts({"network_file_systems": {"/x": object()}})


@pytest.mark.spec("S3")
def test_validate_concurrent() -> None:
    assert validate_concurrent(10, None) == (10, None)
    assert validate_concurrent(10, 6) == (10, 6)
    assert validate_concurrent(1000, 1000) == (1000, 1000)
    with pytest.raises(InvalidError, match="target_inputs"):
        validate_concurrent(4, 5)
    for bad in (0, 1001, True, 2.0):
        with pytest.raises(InvalidError, match="max_inputs"):
            validate_concurrent(bad, None)  # type: ignore[arg-type]
    with pytest.raises(InvalidError, match="target_inputs"):
        validate_concurrent(4, 0)


@pytest.mark.spec("S3")
def test_concurrent_reaches_the_options() -> None:
    o = _opts(concurrent=(20, 10))
    assert (o.max_inputs, o.target_inputs) == (20, 10)


@pytest.mark.spec("S5")
def test_validate_batched() -> None:
    assert validate_batched(1, 0) == (1, 0)
    assert validate_batched(1000, 600_000) == (1000, 600_000)
    for size, wait in [(0, 10), (1001, 10), (4, -1), (4, 600_001), (4, 1.5), (True, 1)]:
        with pytest.raises(InvalidError, match="@batched"):
            validate_batched(size, wait)  # type: ignore[arg-type]


@pytest.mark.spec("S5")
def test_batched_reaches_the_options_and_refuses_bad_company() -> None:
    o = _opts(batched=(8, 100))
    assert (o.batch_max_size, o.batch_wait_ms, o.max_inputs) == (8, 100, 1)
    with pytest.raises(InvalidError, match="@concurrent"):
        _opts(batched=(8, 100), concurrent=(4, None))
    with pytest.raises(InvalidError, match="web endpoint"):
        _opts(batched=(8, 100), is_web=True)
    with pytest.raises(InvalidError, match="generator"):
        _opts(batched=(8, 100), is_generator=True)


def test_options_are_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        _opts().timeout = 5  # type: ignore[misc]


def test_the_typed_decorator_keywords_are_the_ones_the_validator_knows() -> None:
    # `Unpack[FunctionKwargs]` is what a type checker sees of @app.function/@app.cls: a
    # name missing there would be flagged in correct code, an extra one would pass a typo.
    from ketch._utils import options
    from ketch._utils.decorator_kwargs import FunctionKwargs

    assert set(FunctionKwargs.__annotations__) == set(options._KNOWN)
