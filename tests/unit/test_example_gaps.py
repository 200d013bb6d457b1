"""Names Modal's examples use: `modal.gpu` objects, `App.image`, and
`Image.run_commands(gpu=)` (build steps take a GPU request)."""

from __future__ import annotations

import pytest

import ketch
from ketch._utils.options import validate_function_options
from ketch.exception import InvalidError, KetchDeprecationWarning


@pytest.mark.spec("S7", "A4")
@pytest.mark.parametrize(
    ("make", "value"),
    [
        (lambda: ketch.gpu.A10G(count=2), "A10G:2"),
        (lambda: ketch.gpu.T4(), "T4"),
        (lambda: ketch.gpu.L4(count=4), "L4:4"),
        (lambda: ketch.gpu.A100(), "A100"),
        (lambda: ketch.gpu.A100(size="80GB", count=2), "A100-80GB:2"),
        (lambda: ketch.gpu.A100(size="40GB"), "A100-40GB"),
        (lambda: ketch.gpu.L40S(), "L40S"),
        (lambda: ketch.gpu.H100(count=8), "H100:8"),
        (lambda: ketch.gpu.H200(), "H200"),
        (lambda: ketch.gpu.B200(), "B200"),
        (lambda: ketch.gpu.Any(count=2), "any:2"),
    ],
)
def test_gpu_objects_are_their_gpu_strings_and_warn(make: object, value: str) -> None:
    with pytest.warns(KetchDeprecationWarning, match=f'write gpu="{value}" instead'):
        gpu = make()  # type: ignore[operator]
    assert gpu == value and isinstance(gpu, str)
    assert validate_function_options({"gpu": gpu}, is_generator=False, is_web=False).gpu == value


@pytest.mark.spec("S7")
def test_gpu_objects_work_as_gpu_of_a_function_and_in_lists() -> None:
    app = ketch.App("gpus")
    with pytest.warns(KetchDeprecationWarning):
        one, two = ketch.gpu.A10G(count=2), ketch.gpu.T4()

    @app.function(gpu=one, serialized=True)
    def f() -> None:
        pass

    @app.function(gpu=[one, two], serialized=True)
    def g() -> None:
        pass

    assert f._options.gpu == "A10G:2"
    assert g._options.gpu == ["A10G:2", "T4"]


@pytest.mark.spec("S7")
def test_bad_gpu_object_arguments_are_refused() -> None:
    with pytest.raises(InvalidError, match="40GB' or '80GB"):
        ketch.gpu.A100(size="20GB")
    with pytest.raises(InvalidError, match="number of GPUs"):
        ketch.gpu.H100(count=0)
    with pytest.raises(TypeError):
        ketch.gpu.H100(2)  # type: ignore[misc]


@pytest.mark.spec("A1")
def test_app_image_is_the_default_image_functions_get() -> None:
    image = ketch.Image.debian_slim().pip_install("six")
    assert ketch.App("a", image=image).image is image
    default = ketch.App("b").image
    assert default.spec() == ketch.Image.debian_slim().spec()
    with default.imports():
        import not_a_module_anywhere  # type: ignore[import-not-found]  # noqa: F401


@pytest.mark.spec("A9", "I1")
def test_build_steps_take_a_gpu_request_spelled_as_functions_do() -> None:
    base = ketch.Image.debian_slim()
    step = base.run_commands("nvidia-smi", gpu="t4:2").spec()["steps"][-1]
    assert step == {"type": "run_commands", "commands": ["nvidia-smi"], "gpu": "T4:2"}
    listed = base.run_commands("true", gpu=["h100", "A100"]).spec()["steps"][-1]
    assert listed["gpu"] == ["H100", "A100"]
    with pytest.warns(DeprecationWarning):
        as_object = base.run_commands("true", gpu=ketch.gpu.A10G())
    got = as_object.spec()["steps"][-1]["gpu"]
    assert got == "A10G" and type(got) is str  # a plain JSON value in the spec
    # Without a GPU the step (and so the image's hash) is what it always was.
    assert base.run_commands("true", gpu=None).spec() == base.run_commands("true").spec()
    assert "gpu" not in base.run_commands("true").spec()["steps"][-1]
    with pytest.raises(InvalidError, match=r"Image.run_commands: invalid gpu 'T4:x'"):
        base.run_commands("true", gpu="T4:x")

    def warm() -> None:
        pass

    fn_step = base.run_function(warm, gpu="any").spec()["steps"][-1]
    assert fn_step["gpu"] == "any"
    assert "gpu" not in base.run_function(warm).spec()["steps"][-1]
    with pytest.raises(InvalidError, match=r"Image\.run_function: gpu must not be an empty list"):
        base.run_function(warm, gpu=[])


def test_concurrent_with_only_a_target_takes_the_target_as_its_limit() -> None:
    # Modal's http_server_sticky example: @modal.concurrent(target_inputs=100).
    from ketch._utils.options import validate_concurrent

    assert validate_concurrent(None, 100) == (100, 100)
    assert validate_concurrent(8, None) == (8, None)
    with pytest.raises(ketch.exception.InvalidError, match="max_inputs"):
        ketch.concurrent()
