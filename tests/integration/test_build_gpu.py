"""Image build steps with a GPU (`run_commands(gpu=)`, `run_function(gpu=)`) on a server
whose GPU inventory is FAKE (KETCH_FAKE_GPUS: a T4 and an A10G; no real GPU is used): a
step runs holding the GPUs it asked for and sees them as a container would, gives them
back when it ends, waits while a container holds them, and a type the host lacks fails
the deploy saying so."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import test_rootfs_containers as rootfs
from cli_support import env_for, ketch, ok, write

pytestmark = [*rootfs.pytestmark, pytest.mark.spec("I1", "S7")]

_IMAGE = 'ketch.Image.debian_slim(python_version="3.11")'
_APP = """
import ketch


def record():
    import json, os

    keys = ("CUDA_VISIBLE_DEVICES", "NVIDIA_VISIBLE_DEVICES", "KETCH_FAKE_GPUS")
    with open("/opt/fn-gpu.json", "w") as f:
        json.dump({{k: os.environ.get(k) for k in keys}}, f)


image = (
    {image}
    .run_commands("echo {mark} $CUDA_VISIBLE_DEVICES > /opt/cmd-gpu", gpu="A10G")
    .run_function(record, gpu="T4")
)
app = ketch.App({name!r}, image=image)


@app.function()
def seen() -> dict:
    import json, os

    with open("/opt/fn-gpu.json") as f:
        fn = json.load(f)
    with open("/opt/cmd-gpu") as f:
        cmd = f.read().split()
    return {{"cmd": cmd, "fn": fn, "now": os.environ.get("CUDA_VISIBLE_DEVICES")}}


@app.function(gpu="A10G")
def on_a10g() -> str:
    import os

    return os.environ["CUDA_VISIBLE_DEVICES"]
"""


@pytest.fixture
def gpu_server(monkeypatch: pytest.MonkeyPatch, fresh_server: Any) -> Iterator[Any]:
    yield fresh_server


@pytest.fixture(autouse=True)
def _fake_gpus(monkeypatch: pytest.MonkeyPatch) -> None:
    # Set before fresh_server starts its server (autouse fixtures come first).
    monkeypatch.setenv("KETCH_FAKE_GPUS", "T4,A10G")


def test_build_steps_hold_the_gpus_they_ask_for_and_give_them_back(
    gpu_server: Any, tmp_path: Path
) -> None:
    name, mark = f"bgpu-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex[:10]
    app_file = write(tmp_path / "app.py", _APP.format(image=_IMAGE, mark=mark, name=name))
    done = ketch(gpu_server.home, "deploy", str(app_file), timeout=400)
    log = ok(done) + done.stderr
    assert f'run_commands("echo {mark} $CUDA_VISIBLE_DEVICES > /opt/cmd-gpu", gpu="A10G")' in log
    assert 'run_function(record, gpu="T4")' in log
    assert "GPUs 1 assigned: A10G" in log and "GPUs 0 assigned: T4" in log, log
    got = rootfs._call(gpu_server.home, name, "seen")
    assert got["cmd"] == [mark, "1"], got  # the A10G is device 1 of the fake host
    assert got["fn"] == {"CUDA_VISIBLE_DEVICES": "0", "NVIDIA_VISIBLE_DEVICES": "0",
                         "KETCH_FAKE_GPUS": "1"}, got  # fmt: skip
    assert got["now"] == ""  # a function without gpu= sees none of them
    # The build gave the A10G back: a container that needs it gets it.
    assert rootfs._call(gpu_server.home, name, "on_a10g") == "1"


_MISSING = """
import ketch

image = {image}.run_commands("echo {mark}", gpu="H100:2")
app = ketch.App({name!r}, image=image)


@app.function()
def f() -> int:
    return 1
"""


def test_a_step_asking_for_a_gpu_the_host_lacks_fails_the_deploy(
    gpu_server: Any, tmp_path: Path
) -> None:
    name, mark = f"bgpu-no-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex[:10]
    app_file = write(tmp_path / "app.py", _MISSING.format(image=_IMAGE, mark=mark, name=name))
    done = ketch(gpu_server.home, "deploy", str(app_file), timeout=400)
    assert done.returncode != 0, done.stderr
    assert "needs GPU H100:2, which this host does not have" in done.stderr, done.stderr
    assert "GPUs here: T4, A10G" in done.stderr or "GPUs here:" in done.stderr, done.stderr
    listed = ok(ketch(gpu_server.home, "app", "list"))
    assert name not in listed


_HOLDER = """
import ketch

app = ketch.App({name!r})


@app.function(gpu="A10G", scaledown_window=2)
def hold(gate: str) -> str:
    import os, time

    while not os.path.exists(gate):
        time.sleep(0.05)
    return os.environ["CUDA_VISIBLE_DEVICES"]
"""

_WAITER = """
import ketch

image = {image}.run_commands("echo {mark} $CUDA_VISIBLE_DEVICES > /opt/cmd-gpu", gpu="A10G")
app = ketch.App({name!r}, image=image)


@app.function()
def seen() -> list:
    with open("/opt/cmd-gpu") as f:
        return f.read().split()
"""


def test_a_step_waits_while_a_container_holds_its_gpu(gpu_server: Any, tmp_path: Path) -> None:
    holder, waiter = f"bgpu-h-{uuid.uuid4().hex[:8]}", f"bgpu-w-{uuid.uuid4().hex[:8]}"
    mark, gate = uuid.uuid4().hex[:10], tmp_path / "gate"
    ok(ketch(gpu_server.home, "deploy", str(write(tmp_path / "h.py", _HOLDER.format(name=holder)))))
    spawn = (
        f"import ketch\ncall = ketch.Function.from_name({holder!r}, 'hold').spawn({str(gate)!r})\n"
    )
    ok(
        subprocess.run(
            [sys.executable, "-c", spawn], env=env_for(gpu_server.home), capture_output=True,
            text=True, timeout=120,
        )
    )  # fmt: skip
    running = 0
    for _ in range(300):  # until the holder's container runs, holding the A10G
        shown = ok(ketch(gpu_server.home, "app", "status", holder, "--json"))
        running = json.loads(shown)["functions"]["hold"]["running"]
        if running:
            break
        time.sleep(0.2)
    assert running, shown
    app_file = write(tmp_path / "w.py", _WAITER.format(image=_IMAGE, mark=mark, name=waiter))
    deploy = subprocess.Popen(
        [sys.executable, "-m", "ketch.cli", "deploy", str(app_file)],
        env=env_for(gpu_server.home), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        time.sleep(3)
        assert deploy.poll() is None  # still waiting for the GPU
        gate.touch()
        _, err = deploy.communicate(timeout=400)
    finally:
        if deploy.poll() is None:
            deploy.kill()
            deploy.wait()
    assert deploy.returncode == 0, err
    assert "waiting: no GPU of type A10G free" in err, err
    assert rootfs._call(gpu_server.home, waiter, "seen") == [mark, "1"]
