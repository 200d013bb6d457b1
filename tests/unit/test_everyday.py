"""Modal's everyday helpers without a server: Image.imports and the project-file helpers,
cmd/entrypoint, is_local / interact / current ids, enable_output, and which containers get
the web runtime (issue 15)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import io
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest

import ketch
from ketch import _output
from ketch._runtime import entry
from ketch._server import launch
from ketch._utils import payload
from ketch.exception import InvalidError

pytestmark = pytest.mark.spec("C7")


@pytest.fixture
def in_container(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KETCH_CONTAINER_ID", "c-test")


def _steps(image: ketch.Image) -> list[dict[str, Any]]:
    return cast("list[dict[str, Any]]", image.spec()["steps"])


# -- Image.imports --------------------------------------------------------------------------
def test_imports_tolerates_a_missing_package_locally() -> None:
    image = ketch.Image.debian_slim()
    with image.imports():
        import ketch_everyday_missing  # type: ignore[import-not-found]  # noqa: F401
    with pytest.raises(ValueError, match="not an import"), image.imports():
        raise ValueError("not an import error")


def test_imports_reraises_in_a_container(in_container: None) -> None:
    with pytest.raises(ModuleNotFoundError), ketch.Image.debian_slim().imports():
        import ketch_everyday_missing  # type: ignore[import-not-found]  # noqa: F401


# -- requirements, pyproject, uv_sync ----------------------------------------------------------
def test_pip_install_from_requirements_reads_the_file_now(tmp_path: Path) -> None:
    req = tmp_path / "requirements.txt"
    req.write_text("six==1.16.0\n")
    image = ketch.Image.debian_slim().pip_install_from_requirements(str(req), pre=True)
    (step,) = _steps(image)
    assert step["type"] == "uv_pip_install" and step["pre"] is True
    assert step["requirements"] == [{"path": str(req.resolve()), "content": "six==1.16.0\n"}]
    req.write_text("six==1.17.0\n")
    changed = ketch.Image.debian_slim().pip_install_from_requirements(str(req))
    assert changed.content_hash() != image.content_hash()
    with pytest.raises(InvalidError, match="cannot read"):
        ketch.Image.debian_slim().pip_install_from_requirements(str(tmp_path / "nope.txt"))


def test_project_helpers_refuse_secrets_and_gpus(tmp_path: Path) -> None:
    secret = ketch.Secret.from_dict({"A": "b"})
    with pytest.raises(InvalidError, match="without secrets"):
        ketch.Image.debian_slim().pip_install_from_requirements("r.txt", secrets=[secret])
    with pytest.raises(InvalidError, match="without a GPU"):
        ketch.Image.debian_slim().uv_sync(str(tmp_path), gpu="A100")


def test_pip_install_from_pyproject_takes_optional_groups(tmp_path: Path) -> None:
    py = tmp_path / "pyproject.toml"
    py.write_text(
        '[project]\nname = "p"\nversion = "0"\ndependencies = ["six", "attrs>=22"]\n'
        '[project.optional-dependencies]\nweb = ["httpx"]\ndev = ["pytest"]\n'
    )
    (step,) = _steps(ketch.Image.debian_slim().pip_install_from_pyproject(str(py), ["web"]))
    assert step["type"] == "pip_install" and step["packages"] == ["six", "attrs>=22", "httpx"]
    with pytest.raises(InvalidError, match=r"no optional dependency group 'gpu'.*dev, web"):
        ketch.Image.debian_slim().pip_install_from_pyproject(str(py), ["gpu"])
    (tmp_path / "bad.toml").write_text("[tool.x]\n")
    with pytest.raises(InvalidError, match="no \\[project\\] table"):
        ketch.Image.debian_slim().pip_install_from_pyproject(str(tmp_path / "bad.toml"))


def test_uv_sync_needs_a_lock(tmp_path: Path) -> None:
    with pytest.raises(InvalidError, match=r"no pyproject\.toml"):
        ketch.Image.debian_slim().uv_sync(str(tmp_path))
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "p"\nversion = "0"\n')
    with pytest.raises(InvalidError, match=r"no uv\.lock; run `uv lock`"):
        ketch.Image.debian_slim().uv_sync(str(tmp_path))


def test_project_helpers_skip_local_files_in_a_container(in_container: None) -> None:
    base = ketch.Image.debian_slim()
    assert base.pip_install_from_requirements("/nowhere/requirements.txt") is base
    assert base.pip_install_from_pyproject("/nowhere/pyproject.toml") is base
    assert base.uv_sync("/nowhere") is base


# -- cmd / entrypoint ---------------------------------------------------------------------------
def test_cmd_and_entrypoint_are_recorded_not_built() -> None:
    base = ketch.Image.debian_slim().pip_install("six")
    image = base.cmd(["python", "-m", "http.server"])
    assert image._container_config() == {"cmd": ["python", "-m", "http.server"]}
    assert image.spec() == base.spec() and image.content_hash() == base.content_hash()
    reset = image.entrypoint(["/bin/sh", "-c"])
    assert reset._container_config() == {"entrypoint": ["/bin/sh", "-c"]}  # as in Docker
    both = reset.cmd(["echo hi"])
    assert both._container_config() == {"entrypoint": ["/bin/sh", "-c"], "cmd": ["echo hi"]}
    with pytest.raises(InvalidError, match="list of strings"):
        base.cmd("python -m http.server")  # type: ignore[arg-type]


# -- where code runs ----------------------------------------------------------------------------
def test_is_local_and_current_ids_outside_containers() -> None:
    assert ketch.is_local() is True
    assert ketch.current_input_id() is None
    assert ketch.current_function_call_id() is None


def test_is_local_false_in_a_container(in_container: None) -> None:
    assert ketch.is_local() is False
    with pytest.raises(InvalidError, match="not available inside a container"):
        ketch.interact()


def test_interact_needs_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    with pytest.raises(InvalidError, match="needs a terminal"):
        ketch.interact()

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.setattr("sys.stdin", Tty(""))
    ketch.interact()  # a no-op with a terminal


class _Channel:
    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    def send(self, msg: dict[str, Any]) -> None:
        self.sent.append(msg)


def _runtime(fn: Any) -> Any:
    """A Runtime with just what run_input touches: its channel, target and thread pool."""
    rt: Any = object.__new__(entry.Runtime)
    rt.ch = _Channel()
    rt.target = SimpleNamespace(resolve=lambda method: fn, module=None)
    rt.pool = concurrent.futures.ThreadPoolExecutor(max_workers=2)
    rt.tasks, rt.sync_running, rt.sync_gens = {}, set(), set()
    return rt


def _ids() -> tuple[str | None, str | None]:
    return ketch.current_input_id(), ketch.current_function_call_id()


async def _ids_async() -> tuple[str | None, str | None]:
    return _ids()


@pytest.mark.parametrize("fn", [_ids, _ids_async], ids=["sync", "async"])
def test_run_input_sets_the_ids_for_its_call(fn: Any) -> None:
    rt = _runtime(fn)
    args = payload.dumps(((), {}))

    async def main() -> None:
        await asyncio.gather(
            rt.run_input({"t": "input", "iid": "in-1", "kind": "call", "args": args}),
            rt.run_input(
                {"t": "input", "iid": "in-2", "kind": "call", "args": args, "call_id": "in-2"}
            ),
        )

    asyncio.run(main())
    rt.pool.shutdown()
    results = {m["iid"]: tuple(payload.loads(m["payload"])) for m in rt.ch.sent}
    assert results == {"in-1": ("in-1", None), "in-2": ("in-2", "in-2")}
    assert ketch.current_input_id() is None  # nothing leaks out of the inputs


def test_sync_generator_steps_see_their_input() -> None:
    def gen() -> Any:
        yield ketch.current_input_id()
        yield ketch.current_input_id()

    rt = _runtime(gen)
    msg = {"t": "input", "iid": "in-g", "kind": "gen", "args": payload.dumps(((), {}))}
    asyncio.run(rt.run_input(msg))
    rt.pool.shutdown()
    items = [payload.loads(m["payload"]) for m in rt.ch.sent if m["t"] == "item"]
    assert items == ["in-g", "in-g"]


# -- enable_output ------------------------------------------------------------------------------
def test_enable_output_turns_the_deploy_log_on_while_it_lasts(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert _output.deploy_log() is None
    with ketch.enable_output():
        with ketch.enable_output(show_progress=False):
            pass
        log = _output.deploy_log()
        assert log is not None
        log("Building image abc")
    assert _output.deploy_log() is None
    assert "Building image abc" in capsys.readouterr().err


# -- the web runtime for every container of an app with endpoints --------------------------------
def _fdef(app_id: str, web: bool) -> Any:
    return SimpleNamespace(app_id=app_id, spec=SimpleNamespace(web=object() if web else None))


def test_web_runtime_goes_to_every_function_of_an_app_with_endpoints() -> None:
    plain, endpoint, elsewhere = _fdef("a1", False), _fdef("a1", True), _fdef("a2", False)
    everything = [plain, endpoint, elsewhere]
    assert launch.web_runtime_for(endpoint, everything, "/rt/web") == "/rt/web"
    assert launch.web_runtime_for(plain, everything, "/rt/web") == "/rt/web"
    assert launch.web_runtime_for(elsewhere, everything, "/rt/web") == ""


# -- web methods of a looked-up class --------------------------------------------------------
def test_looked_up_class_finds_its_web_methods() -> None:
    cls = ketch.Cls.from_name("site-app", "Site")
    base = cls._function
    base._info = {
        "function_id": "fn-1",
        "methods": {"plain": {"is_generator": False}},
        "web_methods": {"page": "http://site--page.localhost"},
    }
    base._function_id = "fn-1"
    page = cls().page
    assert page.get_web_url() == "http://site--page.localhost"
    with pytest.raises(InvalidError, match="web endpoint"):
        page.remote()
    assert cls().plain.get_web_url() is None
    with pytest.raises(AttributeError, match="no @method"):
        _ = cls().nothing
