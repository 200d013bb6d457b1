"""Images and shipped source through the CLI (A8, A9): cached builds, clear build failures,
refused steps, the app's own package shipped automatically, and the ways to opt out/in."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from cli_support import app_ids, assert_clean_error, deployed, ketch, ok, python, write

from ketch.image import Image

# The same image as examples/images.py: whichever test builds it first, the rest reuse it.
SIX_IMAGE = 'ketch.Image.debian_slim().pip_install("six").env({"DEMO_MODE": "images"})'


@pytest.mark.spec("A9")
def test_pip_install_image_is_built_once(server, tmp_path) -> None:
    name = f"six-{uuid.uuid4().hex[:8]}"
    app_file = write(
        tmp_path / "six_app.py",
        f"""
        import ketch

        app = ketch.App("{name}", image={SIX_IMAGE})


        @app.function()
        def six_version() -> str:
            import six
            return six.__version__
    """,
    )
    image_dir = (
        server.home
        / "images"
        / Image.debian_slim().pip_install("six").env({"DEMO_MODE": "images"}).content_hash()
    )

    first = ketch(server.home, "deploy", str(app_file))
    ok(first)
    assert (image_dir / ".ok").is_file()
    marker_mtime = (image_dir / ".ok").stat().st_mtime_ns
    dir_mtime = image_dir.stat().st_mtime_ns
    call = f"import ketch; print(ketch.Function.from_name({name!r}, 'six_version').remote())"
    version = ok(python(server.home, call)).strip()
    assert version.count(".") >= 1, version

    second = ketch(server.home, "deploy", str(app_file))
    ok(second)
    # No build step ran: no step headers, no installer output, nothing rewritten.
    assert "==>" not in second.stderr and "Installed" not in second.stderr, second.stderr
    assert (image_dir / ".ok").stat().st_mtime_ns == marker_mtime
    assert image_dir.stat().st_mtime_ns == dir_mtime
    assert ok(python(server.home, call)).strip() == version


@pytest.mark.spec("A9")
def test_first_build_streams_its_log(fresh_server, tmp_path) -> None:
    # A state directory of its own, so this build cannot have happened before.
    app_file = write(
        tmp_path / "log_app.py",
        """
        import ketch

        app = ketch.App("log-app", image=ketch.Image.debian_slim().env({"X": "1"}))


        @app.function()
        def f() -> str:
            import os
            return os.environ["X"]
    """,
    )
    proc = ketch(fresh_server.home, "deploy", str(app_file))
    ok(proc)
    assert "==> debian_slim(" in proc.stderr
    assert "Using CPython" in proc.stderr  # uv's own output, streamed through


@pytest.mark.spec("A9")
def test_run_streams_the_build_log_too(server, tmp_path) -> None:
    tag = uuid.uuid4().hex[:8]  # an image no test has built
    app_file = write(
        tmp_path / "run_log_app.py",
        f"""
        import ketch

        app = ketch.App("run-log", image=ketch.Image.debian_slim().env({{"TAG": "{tag}"}}))


        @app.function()
        def f() -> str:
            import os
            return os.environ["TAG"]
    """,
    )
    proc = ketch(server.home, "run", f"{app_file}::f")
    assert ok(proc).strip() == tag
    assert "==> venv image" in proc.stderr and "==> debian_slim(" in proc.stderr, proc.stderr
    quiet = ketch(server.home, "run", "--quiet", f"{app_file}::f")
    assert ok(quiet).strip() == tag and "==>" not in quiet.stderr, quiet.stderr


@pytest.mark.spec("A9")
def test_failing_pip_install_names_the_step_and_shows_the_log_tail(server, tmp_path) -> None:
    tag = uuid.uuid4().hex[:8]
    package = f"ketch-test-missing-{tag}"
    # --no-index with an empty local wheel folder: fails fast and never reaches an index.
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    app_file = write(
        tmp_path / "broken_image.py",
        f"""
        import ketch

        image = ketch.Image.debian_slim().pip_install(
            "{package}", find_links="{wheels}", extra_options="--no-index")
        app = ketch.App("broken-image-{tag}", image=image)


        @app.function()
        def f():
            return 1
    """,
    )
    before = app_ids(server.home)
    proc = ketch(server.home, "deploy", str(app_file))
    line = assert_clean_error(
        proc, "image build failed at step", f'pip_install("{package}"', max_lines=40
    )
    assert "exit status" in line
    tail = proc.stderr.split("--- last lines of its log ---", 1)
    assert len(tail) == 2 and package in tail[1], proc.stderr
    assert app_ids(server.home) == before
    assert not [p for p in (server.home / "images").iterdir() if p.name.startswith(".tmp")]


@pytest.fixture
def no_uv_pythons(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A server (started after this) that finds no uv-managed interpreters."""
    monkeypatch.setenv("UV_PYTHON_INSTALL_DIR", str(tmp_path / "no-uv-pythons"))


@pytest.mark.spec("A9")
@pytest.mark.parametrize(
    ("step", "call"),
    [
        ("run_commands", 'run_commands("echo hi")'),
        ("apt_install", 'apt_install("curl")'),
    ],
)
def test_unsupported_steps_are_refused_by_name(
    no_uv_pythons, fresh_server, tmp_path, step, call
) -> None:
    # Debian ships no Python 3.12 and this server has no uv-managed one to add: a
    # root-filesystem step on it is refused, naming what to install.
    server = fresh_server
    app_file = write(
        tmp_path / f"{step}_app.py",
        f"""
        import ketch

        app = ketch.App("refused-{step.replace("_", "-")}",
                        image=ketch.Image.debian_slim("3.12").{call})


        @app.function()
        def f():
            return 1
    """,
    )
    before = app_ids(server.home)
    for command in ("deploy", "run"):
        assert_clean_error(
            ketch(server.home, command, str(app_file)),
            "InvalidError",
            'debian_slim(python_version="3.12")',
            "uv python install 3.12",
        )
    assert app_ids(server.home) == before


def make_package(root: Path, pkg: str, app_name: str, include_source: bool = True) -> Path:
    write(root / pkg / "__init__.py", "")
    write(
        root / pkg / "util.py",
        """
        def shout(text: str) -> str:
            return text.upper() + "!"
    """,
    )
    return write(
        root / pkg / "main.py",
        f"""
        import ketch

        from .util import shout

        app = ketch.App("{app_name}", include_source={include_source})


        @app.function()
        def greet(name: str) -> str:
            return shout("hello " + name)


        @app.local_entrypoint()
        def main(name: str = "ada"):
            print("GREETING", greet.remote(name))
    """,
    )


@pytest.mark.spec("A8")
def test_the_apps_package_is_shipped_with_its_helper_modules(server, tmp_path) -> None:
    tag = uuid.uuid4().hex[:8]
    app_file = make_package(tmp_path, f"shipped_{tag}", f"shipped-{tag}")
    ok(ketch(server.home, "deploy", str(app_file)))
    # Called from a process that has never seen the package: the containers have it.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    call = f"import ketch; print(ketch.Function.from_name('shipped-{tag}', 'greet').remote('x'))"
    assert ok(python(server.home, call, cwd=elsewhere)).strip() == "HELLO X!"


@pytest.mark.spec("A8")
def test_include_source_false_leaves_the_module_out(server, tmp_path) -> None:
    tag = uuid.uuid4().hex[:8]
    pkg = f"unshipped_{tag}"
    app_file = make_package(tmp_path, pkg, f"unshipped-{tag}", include_source=False)
    proc = ketch(server.home, "run", str(app_file))
    # The container cannot import the function's module, and says exactly that.
    line = assert_clean_error(proc, "ModuleNotFoundError", f"'{pkg}", max_lines=3)
    assert line == f"Error: ModuleNotFoundError: No module named '{pkg}'"
    hint = proc.stderr.splitlines()[proc.stderr.splitlines().index(line) + 1]
    assert hint.startswith("hint: a container could not import") and "include_source" in hint
    assert "GREETING" not in proc.stdout


@pytest.mark.spec("A8")
def test_add_local_python_source_ships_a_sibling_module(server, tmp_path) -> None:
    tag = uuid.uuid4().hex[:8]
    helper = f"sidekick_{tag}"
    write(
        tmp_path / f"{helper}.py",
        """
        def double(x):
            return 2 * x
    """,
    )
    body = """
        import ketch

        app = ketch.App("{name}"{image})


        @app.function()
        def f(x: int) -> int:
            from {helper} import double
            return double(x)


        @app.local_entrypoint()
        def main():
            print("DOUBLED", f.remote(21))
    """
    without = write(
        tmp_path / "without_source.py", body.format(name=f"without-{tag}", image="", helper=helper)
    )
    # A sibling module is not part of the app's own source: it must be added explicitly.
    assert_clean_error(
        ketch(server.home, "run", str(without)), "ModuleNotFoundError", helper, max_lines=3
    )

    image = f', image=ketch.Image.debian_slim().add_local_python_source("{helper}")'
    with_source = write(
        tmp_path / "with_source.py", body.format(name=f"with-{tag}", image=image, helper=helper)
    )
    assert "DOUBLED 42" in ok(ketch(server.home, "run", str(with_source)))
    ok(ketch(server.home, "deploy", str(with_source)))
    assert deployed(server.home, f"with-{tag}") is not None
    # Another app on the same base image does not see those files.
    assert_clean_error(
        ketch(server.home, "run", str(without)), "ModuleNotFoundError", helper, max_lines=3
    )


@pytest.mark.spec("A8")
def test_add_local_python_source_with_copy(server, tmp_path) -> None:
    tag = uuid.uuid4().hex[:8]
    helper = f"copied_{tag}"
    write(tmp_path / f"{helper}.py", "def triple(x):\n    return 3 * x\n")
    app_file = write(
        tmp_path / "copy_source.py",
        f"""
        import ketch

        image = ketch.Image.debian_slim().add_local_python_source("{helper}", copy=True)
        app = ketch.App("copied-{tag}", image=image)


        @app.function()
        def f(x: int) -> int:
            from {helper} import triple
            return triple(x)
    """,
    )
    assert ok(ketch(server.home, "run", str(app_file), "--x", "5")).strip().endswith("15")
