"""Image.run_function on real root-filesystem builds: the function runs in the image being
built, with its secrets and volumes; what it writes is a layer that containers see; the
layer is cached by the function's code; a raising function fails the deploy with its error.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
import test_rootfs_containers as rootfs
from cli_support import ketch, ok

pytestmark = [*rootfs.pytestmark, pytest.mark.spec("I1")]

_BODY = """
MODEL_DIR = "/opt/model"


def fetch_weights(scale):
    import os
    os.makedirs(MODEL_DIR, exist_ok=True)
    with open(MODEL_DIR + "/weights.txt", "w") as f:
        f.write(str(sum(range(scale))))
    with open(MODEL_DIR + "/token.txt", "w") as f:
        f.write(os.environ["TOKEN"])
    with open("/cache/runs.log", "a") as f:
        f.write("{mark}\\n")
    print("fetched weights {mark}")


image = ketch.Image.debian_slim(python_version="3.11").run_function(
    fetch_weights,
    args=(10,),
    secrets=[ketch.Secret.from_name({secret!r})],
    volumes={{"/cache": ketch.Volume.from_name({volume!r})}},
)
app = ketch.App({name!r}, image=image)
vol = ketch.Volume.from_name({volume!r})


@app.function(volumes={{"/cache": vol}})
def read_model() -> dict:
    def read(p):
        with open(p) as f:
            return f.read()

    return {{
        "weights": read("/opt/model/weights.txt"),
        "token": read("/opt/model/token.txt"),
        "runs": read("/cache/runs.log").split(),
    }}
"""


def _runs_line(stderr: str) -> list[bool]:
    return [cached for step, cached in rootfs._layers(stderr) if "run_function(" in step]


def test_run_function_writes_files_containers_see_and_is_cached(
    server: Any, tmp_path: Path
) -> None:
    name = f"runfn-{uuid.uuid4().hex[:8]}"
    secret, volume = f"runfn-sec-{uuid.uuid4().hex[:8]}", f"runfn-vol-{uuid.uuid4().hex[:8]}"
    token = uuid.uuid4().hex
    ok(ketch(server.home, "secret", "create", secret, f"TOKEN={token}"))
    ok(ketch(server.home, "volume", "create", volume))
    app_file = tmp_path / "app.py"

    def deploy(mark: str) -> str:
        body = _BODY.format(mark=mark, secret=secret, volume=volume, name=name)
        app_file.write_text("import ketch\n" + body)
        done = ketch(server.home, "deploy", str(app_file), timeout=400)
        ok(done)
        return done.stderr

    first = deploy("one")
    assert _runs_line(first) == [False], first
    assert "fetched weights one" in first  # its output is in the build log
    seen = rootfs._call(server.home, name, "read_model")
    assert seen == {"weights": "45", "token": token, "runs": ["one"]}, seen

    # The same code: the layer comes from the cache, the function does not run again.
    again = deploy("one")
    assert _runs_line(again) == [True], again
    assert rootfs._call(server.home, name, "read_model")["runs"] == ["one"]

    # Its code changed: it runs again.
    changed = deploy("two")
    assert _runs_line(changed) == [False], changed
    assert rootfs._call(server.home, name, "read_model")["runs"] == ["one", "two"]


_FAILING = """
import ketch


def broken():
    print("about to fail")
    raise ValueError("no weights at {mark}")


app = ketch.App({name!r}, image=ketch.Image.debian_slim("3.11").run_function(broken))


@app.function()
def f() -> int:
    return 1
"""


def test_a_raising_function_fails_the_deploy_with_its_error(server: Any, tmp_path: Path) -> None:
    name = f"runfn-fail-{uuid.uuid4().hex[:8]}"
    mark = uuid.uuid4().hex[:8]
    app_file = tmp_path / "app.py"
    app_file.write_text(_FAILING.format(name=name, mark=mark))
    done = ketch(server.home, "deploy", str(app_file), timeout=400)
    assert done.returncode != 0, done.stderr
    assert f"broken raised ValueError: no weights at {mark}" in done.stderr, done.stderr
    assert "run_function(broken)" in done.stderr, done.stderr
    assert "Traceback" in done.stderr and "about to fail" in done.stderr, done.stderr


_INLINE = """
import os

import ketch


def use_token():
    import hashlib, os
    os.makedirs("/opt/tok", exist_ok=True)
    with open("/opt/tok/sha", "w") as f:
        f.write(hashlib.sha256(os.environ["TOKEN"].encode()).hexdigest())
    print("used the token {mark}")


# From the deploying process's environment, so the value is not in the uploaded source.
image = ketch.Image.debian_slim("3.11").run_function(
    use_token, secrets=[ketch.Secret.from_dict({{"TOKEN": os.environ.get("RUNFN_TOKEN", "")}})]
)
app = ketch.App({name!r}, image=image)


@app.function()
def sha() -> str:
    with open("/opt/tok/sha") as f:
        return f.read()
"""


def test_inline_secrets_reach_the_step_and_are_kept_nowhere_in_plain(
    server: Any, tmp_path: Path, rootfs_cache: Path
) -> None:
    import hashlib
    import subprocess

    name, mark = f"runfn-inline-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex[:8]
    app_file = tmp_path / "app.py"

    def deploy(token: str) -> str:
        app_file.write_text(_INLINE.format(name=name, mark=mark))
        done = ketch(server.home, "deploy", str(app_file), timeout=400, RUNFN_TOKEN=token)
        ok(done)
        return done.stderr

    token = f"tok-{uuid.uuid4().hex}"
    first = deploy(token)
    assert _runs_line(first) == [False] and f"used the token {mark}" in first, first
    assert rootfs._call(server.home, name, "sha") == hashlib.sha256(token.encode()).hexdigest()
    # The same values: the same sealed digest, so the same image and its cached layer.
    assert _runs_line(deploy(token)) == [True]
    # Other values: another digest, so the step runs again with them.
    other = f"tok-{uuid.uuid4().hex}"
    assert _runs_line(deploy(other)) == [False]
    assert rootfs._call(server.home, name, "sha") == hashlib.sha256(other.encode()).hexdigest()
    # Neither value is anywhere in the server's state or the layer cache in plain text.
    for where in (server.home, rootfs_cache):
        found = subprocess.run(
            ["grep", "-rlF", "-e", token, "-e", other, str(where)],
            capture_output=True, text=True,
        )  # fmt: skip
        assert found.returncode == 1, found.stdout  # 1: no file matched
