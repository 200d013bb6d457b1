"""Modal's everyday helpers through a real server and containers (issue 15): is_local,
current_input_id / current_function_call_id, interact, Image.imports, enable_output, and
the three gaps of the upstream examples (sibling web URLs, web methods through
Cls.from_name, FastAPI in every container of an app with endpoints)."""

from __future__ import annotations

import uuid
from pathlib import Path

import httpx
import pytest

import ketch
from ketch.exception import InvalidError
from supports import everyday_app, everyday_imports

pytestmark = pytest.mark.spec("C7")


def test_ids_and_is_local_inside_containers(server: object) -> None:
    assert ketch.is_local() and ketch.current_input_id() is None
    with everyday_app.app.run(show_logs=False):
        # A bare image: FastAPI, imported at the module's top, comes from ketch, since the
        # app has endpoints, though this function is not one.
        called = everyday_app.where.remote()
        assert called["is_local"] is False and called["fastapi"] == "fastapi"
        assert called["input_id"] and called["call_id"] is None  # not spawned
        again = everyday_app.where.remote()
        assert again["input_id"] != called["input_id"]
        fc = everyday_app.where.spawn()
        spawned = fc.get(timeout=60)
        assert spawned["call_id"] == fc.object_id
        assert spawned["input_id"]
        assert everyday_app.where_async.remote()["input_id"]
        gen = list(everyday_app.ids_gen.remote_gen())
        assert len(gen) == 2 and gen[0] and gen[0] == gen[1]  # every step of one input
        (first,) = everyday_app.ids_agen.remote_gen()
        assert first
        with pytest.raises(InvalidError, match="not available inside a container"):
            everyday_app.try_interact.remote()


def test_plain_function_sees_sibling_web_url(server: object) -> None:
    with everyday_app.app.run(show_logs=False):
        url = everyday_app.hello.get_web_url()
        assert url
        assert everyday_app.sibling_url.remote() == url
        assert httpx.get(url, timeout=60).json() == {"hello": "web"}


def test_web_method_of_a_deployed_class_through_from_name(server: object) -> None:
    name = f"everyday-{uuid.uuid4().hex[:8]}"
    everyday_app.app.deploy(name=name)
    try:
        fresh = ketch.Cls.from_name(name, "Site")().page.get_web_url()
        assert fresh
        assert httpx.get(fresh, timeout=60).json() == {"page": 1}
        looked = ketch.Cls.from_name(name, "Site").hydrate()
        assert looked().page.get_web_url() == fresh  # a resolved handle knows it too
        with pytest.raises(InvalidError, match="web endpoint"):
            looked().page.remote()
        assert looked().plain.remote() == "plain"
        with pytest.raises(AttributeError, match="no @method"):
            _ = looked().nothing
    finally:
        from ketch._client.deploy import ApiClient
        from ketch._utils.aio import run_sync

        run_sync(ApiClient().call("POST", f"/v1/apps/{name}/stop"))


def test_image_imports_reraises_in_the_container(server: object) -> None:
    # Importing the module here tolerated the missing package; its container does not.
    with (
        everyday_imports.app.run(show_logs=False),
        pytest.raises(ModuleNotFoundError, match="ketch_everyday_not_installed_anywhere"),
    ):
        everyday_imports.ran.remote()


def test_enable_output_shows_the_build(server: object, capfd: pytest.CaptureFixture[str]) -> None:
    # An image no earlier run built: its build has lines to show.
    image = ketch.Image.debian_slim().env({"KETCH_EVERYDAY": uuid.uuid4().hex})
    app = ketch.App(f"everyday-out-{uuid.uuid4().hex[:6]}")

    @app.function(image=image, serialized=True)
    def one() -> int:
        print("from the container")
        return 1

    with ketch.enable_output(), app.run():
        assert one.remote() == 1
    shown = capfd.readouterr()
    assert "image for one" in shown.err, shown
    assert "from the container" in shown.out
    with app.run(show_logs=False):
        assert one.remote() == 1
    assert capfd.readouterr().err == ""  # quiet outside the block


def test_uv_sync_installs_the_locked_versions(server: object, tmp_path: Path) -> None:
    import subprocess

    import uv

    project = tmp_path / "proj"
    project.mkdir()
    (project / "pyproject.toml").write_text(
        '[project]\nname = "proj"\nversion = "0"\nrequires-python = ">=3.11"\n'
        'dependencies = ["six==1.16.0"]\n'
    )
    locked = subprocess.run(
        [uv.find_uv_bin(), "lock", "--directory", str(project)], capture_output=True, timeout=120
    )
    if locked.returncode != 0:
        pytest.skip(f"uv lock needs the package index: {locked.stderr.decode()[-200:]}")
    image = ketch.Image.debian_slim().uv_sync(str(project))
    app = ketch.App(f"everyday-uv-{uuid.uuid4().hex[:6]}")

    @app.function(image=image, serialized=True)
    def version() -> str:
        import six

        return str(six.__version__)

    with app.run(show_logs=False):
        assert version.remote() == "1.16.0"
