"""`ketch run` end to end: entrypoint options, file/module/::name forms, logs, bad input.

Every test drives the real CLI in a subprocess against the session's real server.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from cli_support import (
    EXAMPLES,
    app_ids,
    app_rows,
    assert_clean_error,
    deployed,
    env_for,
    ketch,
    ok,
    python,
    write,
)

PARAMS_APP = """
    import datetime
    from typing import Literal, Optional

    import ketch

    app = ketch.App("cli-params")


    @app.function()
    def echo(x):
        return x


    @app.local_entrypoint()
    def main(
        name: str,
        count: int = 1,
        ratio: float = 0.5,
        flag: bool = False,
        when: Optional[datetime.datetime] = None,
        mode: Literal["fast", "slow"] = "fast",
        level: Literal[1, 2] = 1,
        long_option_name: str = "default",
    ):
        '''Print the parsed arguments (with one remote call, so the app really runs).'''
        print("ARGS", repr((name, count, ratio, flag, when, mode, level, long_option_name)))
        print("ECHO", echo.remote(count))


    @app.local_entrypoint()
    def other(x: int):
        print("OTHER", echo.remote(x * 10))


    @app.local_entrypoint()
    async def amain(x: int = 1):
        print("ASYNC", await echo.remote.aio(x + 100))


    @app.function()
    def count(n: int):
        yield from range(n)
"""


@pytest.fixture(scope="module")
def params_app(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write(tmp_path_factory.mktemp("cli") / "params_app.py", PARAMS_APP)


@pytest.mark.spec("B8")
def test_run_hello_prints_results_and_tagged_container_output(server) -> None:
    out = ok(ketch(server.home, "run", str(EXAMPLES / "hello.py")))
    assert "square of 7 is 49" in out
    assert "squares: [0, 1, 4, 9, 16]" in out
    # Container output is shown live, tagged with the function and the container id.
    tagged = re.findall(r"^\[square (ta-[0-9a-z]+)\] squaring (\d+)$", out, re.M)
    assert sorted(int(n) for _, n in tagged) == [0, 1, 2, 3, 4, 7], out


@pytest.mark.spec("B8")
def test_run_quiet_hides_container_output(server) -> None:
    out = ok(ketch(server.home, "run", "--quiet", str(EXAMPLES / "hello.py"), "--n", "3"))
    assert "square of 3 is 9" in out
    assert "squaring" not in out


@pytest.mark.spec("A7")
def test_entrypoint_parameters_become_typed_kebab_case_options(server, params_app) -> None:
    out = ok(
        ketch(
            server.home,
            "run",
            f"{params_app}::main",
            "--name",
            "ada",
            "--count",
            "3",
            "--ratio",
            "1.5",
            "--flag",
            "--when",
            "2024-02-29T12:30:00",
            "--mode",
            "slow",
            "--level",
            "2",
            "--long-option-name",
            "x-y",
        )
    )
    assert (
        "ARGS ('ada', 3, 1.5, True, datetime.datetime(2024, 2, 29, 12, 30), 'slow', 2, 'x-y')"
        in out
    ), out
    assert "ECHO 3" in out

    out = ok(ketch(server.home, "run", f"{params_app}::main", "--name", "bo", "--no-flag"))
    assert "ARGS ('bo', 1, 0.5, False, None, 'fast', 1, 'default')" in out, out


@pytest.mark.spec("A7")
@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((), "Missing option '--name'"),
        (("--name", "a", "--count", "three"), "Invalid value for '--count'"),
        (("--name", "a", "--mode", "medium"), "Invalid value for '--mode'"),
        (("--name", "a", "--when", "yesterday"), "Invalid value for '--when'"),
        (("--name", "a", "--bogus", "1"), "No such option '--bogus'"),
    ],
)
def test_bad_entrypoint_options_are_usage_errors(server, params_app, args, message) -> None:
    before = app_ids(server.home)
    proc = ketch(server.home, "run", f"{params_app}::main", *args)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr
    assert "ARGS" not in proc.stdout
    assert app_ids(server.home) == before  # the app never started


@pytest.mark.spec("A7")
def test_help_after_ref_lists_the_entrypoint_options(server, params_app) -> None:
    out = ok(ketch(server.home, "run", f"{params_app}::main", "--help"))
    for option in (
        "--name",
        "--count",
        "--ratio",
        "--flag / --no-flag",
        "--when",
        "--mode",
        "--long-option-name",
        "[fast|slow]",
        "Print the parsed arguments",
    ):
        assert option in out, out
    general = ok(ketch(server.home, "run", "--help"))
    assert "Run an app's local entrypoint" in general


@pytest.mark.spec("C1")
def test_double_colon_picks_one_of_several_entrypoints(server, params_app) -> None:
    out = ok(ketch(server.home, "run", f"{params_app}::other", "--x", "4"))
    assert "OTHER 40" in out
    assert "ARGS" not in out
    # A function can be run directly too; its result is printed.
    assert ok(ketch(server.home, "run", f"{params_app}::echo", "--x", "hi")).strip().endswith("hi")
    # Async entrypoints are awaited; generator functions print each item.
    assert "ASYNC 105" in ok(ketch(server.home, "run", f"{params_app}::amain", "--x", "5"))
    assert ok(ketch(server.home, "run", f"{params_app}::count", "--n", "3")).split() == [
        "0",
        "1",
        "2",
    ]
    # Without ::name the choice is ambiguous, and the error lists the candidates.
    err = assert_clean_error(ketch(server.home, "run", str(params_app)), "file.py::name")
    assert "main" in err and "other" in err and "amain" in err


@pytest.mark.spec("C1")
@pytest.mark.spec("A8")
def test_module_form_and_package_file_ship_the_package(server, tmp_path) -> None:
    tag = uuid.uuid4().hex[:8]
    pkg = f"clipkg_{tag}"
    write(tmp_path / pkg / "__init__.py", "")
    write(
        tmp_path / pkg / "helper.py",
        """
        def triple(x):
            return 3 * x
    """,
    )
    write(
        tmp_path / pkg / "app.py",
        f"""
        import ketch

        from {pkg}.helper import triple
        from .helper import triple as relative_triple

        app = ketch.App("clipkg-{tag}")


        @app.function()
        def f(x: int) -> int:
            return triple(x) + relative_triple(x)


        @app.local_entrypoint()
        def main(x: int = 1):
            print("RESULT", f.remote(x))
    """,
    )
    out = ok(ketch(server.home, "run", "-m", f"{pkg}.app", "--x", "5", cwd=tmp_path))
    assert "RESULT 30" in out
    out = ok(ketch(server.home, "run", "-m", f"{pkg}.app::main", "--x", "2", cwd=tmp_path))
    assert "RESULT 12" in out
    # The file form, run from another directory, imports it as part of its package too.
    out = ok(ketch(server.home, "run", str(tmp_path / pkg / "app.py"), "--x", "1"))
    assert "RESULT 6" in out


@pytest.mark.spec("C1")
def test_unnamed_app_runs_under_its_file_name(server, tmp_path) -> None:
    name = f"unnamed_{uuid.uuid4().hex[:8]}"
    app_file = write(
        tmp_path / f"{name}.py",
        """
        import ketch

        app = ketch.App()


        @app.function()
        def inc(x: int) -> int:
            return x + 1
    """,
    )
    assert ok(ketch(server.home, "run", str(app_file), "--x", "41")).strip() == "42"
    assert any(r["name"] == name for r in app_rows(server.home))


@pytest.mark.spec("C2")
@pytest.mark.spec("B8")
def test_app_logs_show_stored_output_after_the_run(server, tmp_path) -> None:
    name = f"logs-{uuid.uuid4().hex[:8]}"
    app_file = write(
        tmp_path / "logs_app.py",
        f"""
        import sys

        import ketch

        app = ketch.App("{name}")


        @app.function()
        def talk(n: int) -> int:
            for i in range(n):
                print(f"line-{{i}} from {name}")
            print("to stderr", file=sys.stderr)
            return n


        @app.local_entrypoint()
        def main():
            talk.remote(3)
    """,
    )
    ok(ketch(server.home, "run", "--quiet", str(app_file)))
    out = ok(ketch(server.home, "app", "logs", name))
    for i in range(3):
        assert re.search(rf"\[talk ta-[0-9a-z]+\] line-{i} from {name}$", out, re.M), out
    assert "to stderr" in out
    # Platform events (containers starting and stopping) are stored too, as `system`.
    assert re.search(r"\[talk ta-[0-9a-z]+\] ketch: container started$", out, re.M), out
    tail = (
        ok(
            ketch(
                server.home,
                "app",
                "logs",
                name,
                "--tail",
                "1",
                "--source",
                "stdout",
                "--source",
                "stderr",
            )
        )
        .strip()
        .splitlines()
    )
    assert len(tail) == 1 and tail[0].endswith("to stderr")
    assert ok(ketch(server.home, "app", "logs", name, "--since", "1h")).count(name) == 3
    assert_clean_error(ketch(server.home, "app", "logs", f"no-such-{name}"), "NotFoundError")


@pytest.mark.spec("C2")
def test_app_list_json_and_stop(server, tmp_path) -> None:
    name = f"stopme-{uuid.uuid4().hex[:8]}"
    app_file = write(
        tmp_path / "stop_app.py",
        f"""
        import ketch

        app = ketch.App("{name}")


        @app.function()
        def ping() -> str:
            return "pong"
    """,
    )
    ok(ketch(server.home, "deploy", str(app_file)))
    row = deployed(server.home, name)
    assert row is not None
    assert row["functions"] == ["ping"] and row["environment"] == "main"
    assert row["running"] is True and row["version"] == 1
    call = f"import ketch; print(ketch.Function.from_name({name!r}, 'ping').remote())"
    assert ok(python(server.home, call)).strip() == "pong"

    out = ok(ketch(server.home, "app", "stop", name))
    assert "Stopped" in out and row["app_id"] in out
    rows = {r["app_id"]: r for r in app_rows(server.home)}
    assert rows[row["app_id"]]["state"] == "stopped"
    assert deployed(server.home, name) is None
    proc = python(server.home, call)
    assert proc.returncode != 0 and "NotFoundError" in proc.stderr and name in proc.stderr
    assert_clean_error(ketch(server.home, "app", "stop", name), "NotFoundError", name)
    # The table form lists it too, id uncut.
    assert row["app_id"] in ok(ketch(server.home, "app", "list"))


# -- bad input ------------------------------------------------------------------------------

BAD_APPS = {
    "syntax": (
        """
        import ketch
        app = ketch.App("bad-syntax")
        def f(:
            pass
    """,
        ["InvalidError", "bad_syntax.py:3", "syntax error"],
    ),
    "no_app": (
        """
        import ketch
        x = 1
    """,
        ["InvalidError", "defines no ketch App"],
    ),
    "timeout_zero": (
        """
        import ketch
        app = ketch.App("bad-timeout")

        @app.function(timeout=0)
        def f():
            pass
    """,
        ["InvalidError", "bad_timeout_zero.py:4", "timeout"],
    ),
    "no_parentheses": (
        """
        import ketch
        app = ketch.App("bad-parens")

        @app.function
        def f():
            pass
    """,
        ["InvalidError", "did you forget parentheses"],
    ),
    "import_fails": (
        """
        import ketch
        import no_such_module_for_ketch_tests
    """,
        ["InvalidError", "no_such_module_for_ketch_tests"],
    ),
    "raises": (
        """
        import ketch
        raise RuntimeError("kaboom at import")
    """,
        ["InvalidError", "RuntimeError", "kaboom at import"],
    ),
}


@pytest.fixture(scope="module")
def bad_apps(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("bad")
    return {key: write(folder / f"bad_{key}.py", text) for key, (text, _) in BAD_APPS.items()}


@pytest.mark.spec("C6")
@pytest.mark.spec("A3")
@pytest.mark.parametrize("command", ["run", "deploy"])
@pytest.mark.parametrize("key", sorted(BAD_APPS))
def test_bad_app_files_fail_in_one_line(server, bad_apps, key, command) -> None:
    proc = ketch(server.home, command, bad_apps[key].name, cwd=bad_apps[key].parent)
    assert_clean_error(proc, *BAD_APPS[key][1])


@pytest.mark.spec("C6")
def test_bad_input_writes_nothing(server, bad_apps, tmp_path) -> None:
    before = app_ids(server.home)
    for path in bad_apps.values():
        assert ketch(server.home, "deploy", str(path)).returncode != 0
    assert ketch(server.home, "run", str(tmp_path / "missing.py")).returncode != 0
    assert app_ids(server.home) == before


@pytest.mark.spec("C6")
def test_verbose_shows_the_traceback(server, bad_apps) -> None:
    proc = ketch(server.home, "--verbose", "run", str(bad_apps["raises"]))
    assert proc.returncode == 1
    assert "Traceback" in proc.stderr and "kaboom at import" in proc.stderr
    assert "--verbose" not in proc.stderr.splitlines()[-1]
    proc = ketch(server.home, "run", str(bad_apps["raises"]), KETCH_VERBOSE="1")
    assert "Traceback" in proc.stderr


@pytest.mark.spec("C1")
@pytest.mark.parametrize(
    ("ref", "needles"),
    [
        ("{dir}/nowhere.py", ["no such file"]),
        ("{dir}/notes.txt", ["not a Python file"]),
        ("{hello}::nope", ["'nope'", "main", "square"]),
        ("{hello}::other_app.main", ["no App named 'other_app'"]),
    ],
)
def test_bad_refs_fail_in_one_line(server, tmp_path, ref, needles) -> None:
    (tmp_path / "notes.txt").write_text("hello")
    ref = ref.format(dir=tmp_path, hello=EXAMPLES / "hello.py")
    assert_clean_error(ketch(server.home, "run", ref), *needles)


@pytest.mark.spec("C1")
def test_missing_module_and_missing_ref(server) -> None:
    assert_clean_error(
        ketch(server.home, "run", "-m", "no_such_pkg_for_ketch.app"),
        "cannot import module",
        "no_such_pkg_for_ketch",
    )
    proc = ketch(server.home, "run")
    assert proc.returncode == 2 and "Missing argument 'REF'" in proc.stderr


@pytest.mark.spec("A11")
def test_from_name_of_missing_app_or_function_names_both(server) -> None:
    ok(ketch(server.home, "deploy", str(EXAMPLES / "hello.py")))
    proc = python(
        server.home,
        """
        import ketch
        from ketch.exception import NotFoundError
        for app, fn in [("hello", "cube"), ("no-such-app-xyz", "square")]:
            try:
                ketch.Function.from_name(app, fn).remote(2)
            except NotFoundError as exc:
                print("NotFoundError:", exc)
    """,
    )
    lines = ok(proc).strip().splitlines()
    assert len(lines) == 2, lines
    assert "'hello'" in lines[0] and "'cube'" in lines[0]
    assert "'no-such-app-xyz'" in lines[1] and "'square'" in lines[1]


@pytest.mark.spec("C6")
def test_ctrl_c_stops_the_ephemeral_app(server, tmp_path) -> None:
    name = f"interrupted-{uuid.uuid4().hex[:8]}"
    app_file = write(
        tmp_path / "sleeper.py",
        f"""
        import time

        import ketch

        app = ketch.App("{name}")


        @app.function()
        def nap() -> str:
            print("napping", flush=True)
            time.sleep(600)
            return "rested"


        @app.local_entrypoint()
        def main():
            print(nap.remote())
    """,
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "ketch.cli", "run", str(app_file)],
        env=env_for(server.home),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        assert "napping" in proc.stdout.readline()  # the input is running in a container
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130, out + err
    assert "Interrupted." in err and "Traceback" not in err
    rows = [r for r in app_rows(server.home) if r["name"] == name]
    assert [r["state"] for r in rows] == ["stopped"]
    # Its container goes too (it gets the configured grace period to finish).
    deadline = time.monotonic() + 60
    while [r["containers"] for r in app_rows(server.home) if r["name"] == name] != [0]:
        assert time.monotonic() < deadline, "the stopped app kept its container"
        time.sleep(0.5)
