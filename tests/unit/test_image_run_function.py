"""Image.run_function without a build: its spec step, what its hash depends on, the
arguments it refuses, the build op it plans, and how a failed or late step is reported."""

from __future__ import annotations

import asyncio
import base64
import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import cloudpickle
import pytest

from ketch._images import steps
from ketch._images.dockerfile import Run
from ketch._images.function_step import BOOTSTRAP, FunctionResources, StepExtra
from ketch._images.process import ImageBuildError
from ketch._utils.protocol.spec import ImageSpec
from ketch.exception import InvalidError
from ketch.image import Image
from ketch.secret import Secret
from ketch.volume import Volume

pytestmark = pytest.mark.spec("I1")


def download(scale: int = 1) -> None:
    with open("/opt/weights.txt", "w") as f:
        f.write(str(scale))


def download_differently(scale: int = 1) -> None:
    with open("/opt/weights.txt", "w") as f:
        f.write(str(scale * 2))


def _step(image: Image) -> dict[str, Any]:
    (step,) = image.spec()["steps"]
    assert step["type"] == "run_function"
    return dict(step)


def test_the_step_carries_the_function_its_arguments_and_references() -> None:
    image = Image.debian_slim("3.11").run_function(
        download,
        args=(3,),
        env={"MODE": "fast", "UNSET": None},
        secrets=[Secret.from_name("hf", required_keys=["TOKEN"])],
        volumes={"/cache": Volume.from_name("models", create_if_missing=True)},
        timeout=60,
    )
    step = _step(image)
    fn = cloudpickle.loads(base64.b64decode(step["function"]))
    assert fn.__name__ == "download" and step["name"] == "download"
    assert cloudpickle.loads(base64.b64decode(step["args"])) == ((3,), {})
    assert step["env"] == {"MODE": "fast"}
    assert step["secrets"] == [{"name": "hf", "environment": None, "required_keys": ["TOKEN"]}]
    assert step["volumes"] == [
        {"mount": "/cache", "name": "models", "environment": None, "create_if_missing": True}
    ]
    assert step["timeout"] == 60 and step["force"] is None
    # What the server accepts, and a step that needs a root filesystem.
    ImageSpec.model_validate(json.loads(json.dumps(image.spec())))
    assert steps.needs_rootfs(image.spec())


def test_the_hash_follows_the_code_and_arguments_only() -> None:
    base = Image.debian_slim("3.11")
    one = base.run_function(download, kwargs={"scale": 2}).content_hash()
    assert base.run_function(download, kwargs={"scale": 2}).content_hash() == one
    assert base.run_function(download, kwargs={"scale": 3}).content_hash() != one
    assert base.run_function(download_differently, kwargs={"scale": 2}).content_hash() != one
    forced = [base.run_function(download, force_build=True).content_hash() for _ in range(2)]
    assert forced[0] != forced[1]


def test_the_hash_is_the_same_in_another_process(tmp_path: Path) -> None:
    (tmp_path / "steps_mod.py").write_text(
        textwrap.dedent("""
            import ketch
            LIMIT = 7
            def fill():
                open("/opt/x", "w").write(str(LIMIT))
            print(ketch.Image.debian_slim("3.11").run_function(fill).content_hash())
        """)
    )
    hashes = {
        subprocess.run(
            [sys.executable, "-c", "import steps_mod"],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        for _ in range(2)
    }
    assert len(hashes) == 1


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"secrets": ["hf"]}, "ketch.Secret"),
        ({"gpu": "T4:many"}, "invalid gpu"),
        ({"network_file_systems": {"/n": object()}}, "network_file_systems"),
        ({"volumes": {"/v": "not a volume"}}, "ketch.Volume"),
        ({"timeout": 0}, "timeout"),
        ({"env": {"A": 1}}, "env"),
        ({"args": 5}, "args"),
    ],
)
def test_bad_arguments_are_refused_where_the_image_is_defined(
    kwargs: dict[str, Any], needle: str
) -> None:
    with pytest.raises(InvalidError, match=needle):
        Image.debian_slim("3.11").run_function(download, **kwargs)


def test_a_function_that_cannot_be_pickled_is_refused() -> None:
    import threading

    lock = threading.Lock()

    def holds_a_lock() -> None:
        with lock:
            pass

    with pytest.raises(InvalidError, match="cannot serialize"):
        Image.debian_slim("3.11").run_function(holds_a_lock)
    with pytest.raises(InvalidError, match="expects a function"):
        Image.debian_slim("3.11").run_function("download")  # type: ignore[arg-type]


def test_it_cannot_follow_mounted_files(tmp_path: Path) -> None:
    (tmp_path / "f.txt").write_text("x")
    image = Image.debian_slim("3.11").add_local_file(tmp_path / "f.txt", "/data/f.txt")
    with pytest.raises(InvalidError, match="run_function cannot come after"):
        image.run_function(download)


def test_in_a_container_it_is_skipped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KETCH_CONTAINER_ID", "ta-1")
    image = Image.debian_slim("3.11")
    assert image.run_function(download) is image


def _fake_extra(step: Any, origin: str) -> StepExtra:
    return StepExtra(lambda: ({}, []), str(step["name"]), 5.0)


def test_the_plan_runs_the_bootstrap_with_the_images_python() -> None:
    spec = Image.debian_slim("3.11").run_function(download).spec()
    _, ops = steps.plan(spec, {}, _fake_extra)
    (op,) = ops
    assert isinstance(op.instruction, Run)
    assert op.instruction.argv == ("/usr/bin/python3", "/tmp/.ketch/in/run_function.py")
    inputs = dict(op.inputs)
    assert inputs["run_function.py"] == BOOTSTRAP
    assert json.loads(inputs["step.json"])["function"] == spec["steps"][0]["function"]
    assert op.origin == "run_function(download)" and op.extra is not None
    with pytest.raises(InvalidError, match="cannot run functions"):
        steps.plan(spec, {})


def test_secrets_volumes_and_the_runtime_are_lent_at_run_time(tmp_path: Path) -> None:
    asked: list[tuple[str | None, str]] = []

    def secrets(environment: str | None, name: str) -> dict[str, str]:
        asked.append((environment, name))
        return {"TOKEN": "t0k"}

    resources = FunctionResources(
        runtime=lambda: tmp_path / "runtime",
        secrets=secrets,
        volumes=lambda env, ref: tmp_path / "vols" / str(ref["name"]),
    )
    step = _step(
        Image.debian_slim("3.11").run_function(
            download,
            env={"MODE": "x"},
            secrets=[Secret.from_name("hf")],
            volumes={"/cache": Volume.from_name("models")},
        )
    )
    extra = resources.extra(step, "run_function(download)", environment="dev")
    assert asked == []  # nothing is looked up for a layer that turns out cached
    env, binds = extra.prepare()
    assert asked == [("dev", "hf")]
    assert env["TOKEN"] == "t0k" and env["MODE"] == "x"
    assert env["PYTHONPATH"] == "/tmp/.ketch/runtime"
    assert [(b.source, b.target, b.writable) for b in binds] == [
        (tmp_path / "runtime", "/tmp/.ketch/runtime", False),
        (tmp_path / "vols" / "models", "/cache", True),
    ]
    step["secrets"][0]["required_keys"] = ["OTHER"]
    with pytest.raises(ImageBuildError, match="missing required keys: OTHER"):
        resources.extra(step, "o", environment="dev").prepare()


def test_a_raised_exception_becomes_the_errors_detail() -> None:
    log_tail = "\n".join(
        [
            "Traceback (most recent call last):",
            "ValueError: no weights",
            "ketch: the step raised ValueError: no weights",
        ]
    )

    async def failing() -> None:
        raise ImageBuildError("RUN download()", log_tail, "exit status 1")

    extra = StepExtra(lambda: ({}, []), "download", 5.0)
    with pytest.raises(ImageBuildError) as info:
        asyncio.run(extra.run(failing(), "RUN download()"))
    assert info.value.detail == "download raised ValueError: no weights"
    assert "ketch: the step raised" not in info.value.log_tail
    assert "Traceback" in info.value.log_tail

    async def never() -> None:
        await asyncio.Event().wait()

    late = StepExtra(lambda: ({}, []), "download", 0)
    with pytest.raises(ImageBuildError, match="ran past its timeout of 0 s"):
        asyncio.run(late.run(never(), "RUN download()"))
