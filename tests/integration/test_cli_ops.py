"""Operating ketch through the real CLI: versions and rollback, call records, containers,
logs (stored, filtered, followed), and bad input answered in one line.

Every test drives `python -m ketch.cli` in a subprocess against the session's real server,
with real containers and real HTTP.
"""

from __future__ import annotations

import json
import re
import textwrap
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from cli_support import assert_clean_error, ketch, ok

import ketch as ketch_sdk
from supports.web_helpers import cli, steady_load, wait_for

WEB_APP = """
    import ketch

    app = ketch.App("{name}")


    @app.function()
    @ketch.fastapi_endpoint()
    def hello() -> str:
        print("hello answered {text}")
        return "{text}"
"""

OPS_APP = """
    import os
    import sys
    import time

    import ketch

    app = ketch.App("{name}")


    @app.function()
    @ketch.fastapi_endpoint()
    def page(q: str = "") -> str:
        return "page " + q


    @app.function()
    def work(x: int) -> int:
        print(f"work start {{x}}")
        print(f"work err {{x}}", file=sys.stderr)
        return x * 2


    @app.function()
    def fail(x: int) -> int:
        raise ValueError(f"bad input {{x}}")


    @app.function()
    def slow(x: int, gate: str) -> int:
        # Runs until the test opens the gate (a file), and notes each start in it.
        print(f"slow start {{x}}", flush=True)
        with open(gate + ".starts", "a") as fh:
            fh.write("start\\n")
        deadline = time.monotonic() + 120
        while not os.path.exists(gate) and time.monotonic() < deadline:
            time.sleep(0.05)
        return x + 1000
"""


def _deploy(home: Path, path: Path, text: str) -> str:
    path.write_text(text)
    return ok(ketch(home, "deploy", str(path)))


def _web_url(out: str, tag: str) -> str:
    match = re.search(rf"^\s+{tag}\s+(http://127\.0\.0\.1:\d+)$", out, re.M)
    assert match, out
    return match.group(1)


def _history(home: Path, name: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = json.loads(ok(ketch(home, "app", "history", name, "--json")))
    return rows


@pytest.fixture
def ops_app(server, tmp_path: Path) -> Any:  # type: ignore[no-untyped-def]
    name = f"ops-{uuid.uuid4().hex[:8]}"
    path = tmp_path / "ops_app.py"
    path.write_text(textwrap.dedent(OPS_APP).format(name=name))
    out = json.loads(ok(ketch(server.home, "deploy", str(path), "--json")))
    assert out["name"] == name and out["app_id"].startswith("ap-")
    assert out["functions"]["work"] is None  # a plain function has no URL
    yield name, out["functions"]["page"]
    ketch(server.home, "app", "stop", name, "-y")


# -- versions (W7) ---------------------------------------------------------------------------


@pytest.mark.spec("W7")
@pytest.mark.spec("C2")
def test_history_and_rollback_switch_what_the_url_serves_without_failures(
    server, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    name = f"roll-{uuid.uuid4().hex[:8]}"
    path = tmp_path / "roll.py"
    url = _web_url(
        _deploy(server.home, path, textwrap.dedent(WEB_APP).format(name=name, text="v1")), "hello"
    )
    try:
        assert httpx.get(url, timeout=60).json() == "v1"
        assert (
            _web_url(
                _deploy(server.home, path, textwrap.dedent(WEB_APP).format(name=name, text="v2")),
                "hello",
            )
            == url
        )
        assert httpx.get(url, timeout=60).json() == "v2"

        rows = _history(server.home, name)
        assert [(r["version"], r["live"]) for r in rows] == [(1, False), (2, True)]
        assert rows[0]["source"] != rows[1]["source"]  # the source changed between them
        assert rows[0]["spec_hash"] != rows[1]["spec_hash"]
        table = ok(ketch(server.home, "app", "history", name))
        assert re.search(r"v2 .* live", table), table
        # Not a terminal: plain text, even where the environment asks for colour.
        assert "\x1b[" not in table
        colour = ketch(server.home, "app", "history", name, FORCE_COLOR="1", NO_COLOR="")
        assert "\x1b[" not in ok(colour)

        # A steady load across the rollback: every request answered, v2 then v1.
        with steady_load(url) as seen:
            wait_for(lambda: len(seen) >= 5, timeout=30, what="load before the rollback")
            out = ok(ketch(server.home, "app", "rollback", name))
            assert "v1" in out and "v3" in out, out
            wait_for(lambda: seen and seen[-1][1] == '"v1"', timeout=30, what="v1 to answer")
            mark = len(seen)
            wait_for(lambda: len(seen) >= mark + 5, timeout=30, what="load after it")
        assert not [s for s in seen if s[0] != 200], [s for s in seen if s[0] != 200][:5]
        texts = [t for _, t in seen]
        first_v1 = texts.index('"v1"')
        assert set(texts[:first_v1]) == {'"v2"'} and set(texts[first_v1:]) == {'"v1"'}, texts

        rows = _history(server.home, name)
        assert [(r["version"], r["live"], r["rollback_of"]) for r in rows] == [
            (1, False, None),
            (2, False, None),
            (3, True, 1),
        ]
        assert rows[2]["source"] == rows[0]["source"]
        assert rows[2]["spec_hash"] == rows[0]["spec_hash"]

        # Bad input: one line, exit != 0, nothing changed.
        assert_clean_error(
            ketch(server.home, "app", "rollback", name, "9"), "NotFoundError", "no version 9"
        )
        assert_clean_error(
            ketch(server.home, "app", "rollback", name, "v3"), "InvalidError", "already live"
        )
        assert_clean_error(ketch(server.home, "app", "rollback", name, "latest"), "VERSION")
        assert len(_history(server.home, name)) == 3
        assert httpx.get(url, timeout=60).json() == "v1"

        # An explicit version: back to v2, as v4.
        ok(ketch(server.home, "app", "rollback", name, "v2"))
        assert httpx.get(url, timeout=60).json() == "v2"
        assert _history(server.home, name)[-1]["rollback_of"] == 2
    finally:
        ketch(server.home, "app", "stop", name, "-y")
    assert_clean_error(ketch(server.home, "app", "rollback", name), name)
    assert_clean_error(ketch(server.home, "app", "history", f"no-such-{name}"), "NotFoundError")


# -- call records (O3) -----------------------------------------------------------------------


@pytest.mark.spec("O3")
def test_call_records_for_spawned_calls_and_web_requests(server, ops_app) -> None:  # type: ignore[no-untyped-def]
    name, url = ops_app
    good = ketch_sdk.Function.from_name(name, "work").spawn(21)
    bad = ketch_sdk.Function.from_name(name, "fail").spawn(5)
    assert good.get(timeout=60) == 42
    with pytest.raises(ValueError):
        bad.get(timeout=60)
    for i in range(3):
        assert httpx.get(url, params={"q": str(i)}, timeout=60).json() == f"page {i}"

    def web_rows() -> list[dict[str, Any]]:
        rows = json.loads(ok(ketch(server.home, "call", "list", name, "--json")))
        return [r for r in rows if r["kind"] == "web"]

    # A web record is written once the exchange has ended, just after the answer.
    wait_for(lambda: len(web_rows()) == 3, timeout=30, what="three web call records")
    rows = json.loads(ok(ketch(server.home, "call", "list", name, "--json")))
    spawned = {r["call_id"]: r for r in rows if r["kind"] == "spawn"}
    assert set(spawned) == {good.object_id, bad.object_id}
    assert spawned[good.object_id]["function"] == "work"
    assert spawned[good.object_id]["status"] == "ok"
    assert spawned[bad.object_id]["status"] == "error"
    assert spawned[good.object_id]["attempts"] == 1
    assert spawned[good.object_id]["duration"] > 0
    web = [r for r in rows if r["kind"] == "web"]
    assert {(r["function"], r["status"], r["http_status"], r["attempts"]) for r in web} == {
        ("page", "ok", 200, 1)
    }
    assert all(r["duration"] > 0 for r in web)
    created = [r["created"] for r in rows]
    assert created == sorted(created, reverse=True)  # newest first

    assert (
        len(json.loads(ok(ketch(server.home, "call", "list", name, "--json", "--limit", "2")))) == 2
    )
    table = ok(ketch(server.home, "call", "list", name))
    assert good.object_id in table and "ok (200)" in table

    out = ok(ketch(server.home, "call", "get", good.object_id))
    assert re.search(r"status\s+ok", out) and re.search(r"attempts\s+1", out), out
    assert re.search(r"function\s+work", out) and "bytes (pickled)" in out, out
    detail = json.loads(ok(ketch(server.home, "call", "get", bad.object_id, "--json")))
    assert detail["status"] == "error" and "bad input 5" in detail["error"]
    web_detail = json.loads(ok(ketch(server.home, "call", "get", web[0]["call_id"], "--json")))
    assert (web_detail["kind"], web_detail["http_status"], web_detail["outcome"]) == (
        "web",
        200,
        "ok",
    )

    assert_clean_error(ketch(server.home, "call", "get", "fc-nosuchcall"), "NotFoundError")
    assert_clean_error(ketch(server.home, "call", "list", f"no-such-{name}"), "NotFoundError")
    assert_clean_error(ketch(server.home, "call", "list", name, "--limit", "0"), "--limit")


# -- containers ------------------------------------------------------------------------------


@pytest.mark.spec("O1")
@pytest.mark.spec("R6")
def test_container_list_logs_and_stop_requeues_its_input(server, ops_app, tmp_path) -> None:  # type: ignore[no-untyped-def]
    name, _ = ops_app
    gate = tmp_path / "gate"
    call = ketch_sdk.Function.from_name(name, "slow").spawn(7, str(gate))

    def busy() -> list[dict[str, Any]]:
        rows = json.loads(ok(ketch(server.home, "container", "list", "--app", name, "--json")))
        return [r for r in rows if r["function"] == "slow" and r["state"] == "busy"]

    first = wait_for(busy, timeout=60, what="a busy container of slow")[0]
    assert first["inflight"] == 1 and first["app"] == name and first["pid"] > 0
    table = ok(ketch(server.home, "container", "list"))
    assert first["container_id"] in table and "busy" in table
    cid = first["container_id"]
    wait_for(
        lambda: "slow start 7" in ok(ketch(server.home, "container", "logs", cid)),
        timeout=30,
        what="the container's output",
    )

    out = ok(ketch(server.home, "container", "stop", cid))
    assert "1 input(s) re-queued" in out, out
    # The input runs again in a replacement and completes: nothing lost.
    starts = Path(f"{gate}.starts")
    wait_for(
        lambda: starts.read_text().count("start") == 2,
        timeout=60,
        what="the input to start again in a new container",
    )
    gate.touch()
    assert call.get(timeout=90) == 1007
    rows = json.loads(ok(ketch(server.home, "container", "list", "--app", name, "--json")))
    assert cid not in {r["container_id"] for r in rows}
    old = ok(ketch(server.home, "container", "logs", cid))
    assert "ketch: container stopped by an operator" in old, old
    record = json.loads(ok(ketch(server.home, "call", "get", call.object_id, "--json")))
    assert record["status"] == "ok" and record["attempts"] == 1  # not charged to retries

    assert_clean_error(ketch(server.home, "container", "stop", "ta-nosuch"), "NotFoundError")
    assert_clean_error(ketch(server.home, "container", "logs", "ta-nosuch"), "NotFoundError")
    assert_clean_error(
        ketch(server.home, "container", "list", "--app", f"no-such-{name}"), "NotFoundError"
    )


# -- logs (B8, O1) ---------------------------------------------------------------------------


@pytest.mark.spec("B8")
@pytest.mark.spec("O1")
@pytest.mark.spec("C2")
def test_logs_filters_json_follow_and_a_stopped_app(server, ops_app) -> None:  # type: ignore[no-untyped-def]
    name, _ = ops_app
    work = ketch_sdk.Function.from_name(name, "work")
    assert work.remote(1) == 2
    logs = ok(ketch(server.home, "app", "logs", name))
    assert re.search(r"\[work ta-[0-9a-z]+\] work start 1$", logs, re.M), logs
    assert "ketch: deployed version 1" in logs
    assert re.search(r"\[work ta-[0-9a-z]+\] ketch: container started$", logs, re.M), logs

    stdout = ok(ketch(server.home, "app", "logs", name, "--source", "stdout"))
    assert "work start 1" in stdout and "work err 1" not in stdout and "ketch:" not in stdout
    system = ok(ketch(server.home, "app", "logs", name, "--source", "system"))
    assert "work start" not in system and "container started" in system
    assert ok(ketch(server.home, "app", "logs", name, "--function", "page")).strip() == ""
    entries = [
        json.loads(line)
        for line in ok(
            ketch(server.home, "app", "logs", name, "--json", "--function", "work")
        ).splitlines()
    ]
    assert {e["stream"] for e in entries} == {"stdout", "stderr", "system"}
    assert all(e["function"] == "work" and e["container"].startswith("ta-") for e in entries)
    tail = ok(ketch(server.home, "app", "logs", name, "--source", "stderr", "--tail", "1"))
    assert tail.strip().endswith("work err 1"), tail

    # -f: what is stored, then what comes, until interrupted.
    with cli(server.home, "app", "logs", name, "-f", "--source", "stdout") as follower:
        follower.wait_for_line(r"work start 1$", timeout=60)
        marker = uuid.uuid4().int % 10**9
        assert work.remote(marker) == 2 * marker
        follower.wait_for_line(rf"\[work ta-[0-9a-z]+\] work start {marker}$", timeout=60)
        assert f"work err {marker}" not in follower.output  # the filter holds live too
        follower.close()

    # A stopped app keeps its logs, with the containers' end recorded.
    ok(ketch(server.home, "app", "stop", name, "-y"))
    after = wait_for(
        lambda: (
            (out := ok(ketch(server.home, "app", "logs", name)))
            and "container stopped" in out
            and out
        ),
        timeout=30,
        what="the stopped containers in the logs",
    )
    assert f"work start {marker}" in after

    assert_clean_error(ketch(server.home, "app", "logs", f"no-such-{name}"), "NotFoundError")
    assert_clean_error(ketch(server.home, "app", "logs", name, "--since", "yesterday"), "--since")
    assert_clean_error(ketch(server.home, "app", "logs", name, "--source", "nope"), "--source")


# -- every command's help (C1, C6) -----------------------------------------------------------


def _commands(group: Any, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    import click

    out = [path]
    if isinstance(group, click.Group):
        for name, sub in sorted(group.commands.items()):
            out.extend(_commands(sub, (*path, name)))
    return out


@pytest.mark.spec("C6")
def test_every_command_has_help_with_an_example() -> None:
    from click.testing import CliRunner

    from ketch.cli import register_commands

    root = register_commands()
    paths = _commands(root)
    assert {
        ("app", "history"),
        ("app", "rollback"),
        ("call", "list"),
        ("call", "get"),
        ("container", "list"),
        ("container", "logs"),
        ("container", "stop"),
        ("compat", "install"),
        ("run",),
        ("serve",),
        ("deploy",),
    } <= set(paths)
    missing = []
    for path in paths:
        result = CliRunner().invoke(root, [*path, "--help"], prog_name="ketch")
        assert result.exit_code == 0, (path, result.output)
        after = result.output.partition("Example:")[2]
        if not re.search(r"^\s+ketch ", after, re.M):
            missing.append(" ".join(path) or "ketch")
    assert not missing, f"--help without an `Example:` line: {missing}"


# -- run --detach, --name and the ref forms of serve/deploy (C1) ------------------------------

DETACH_APP = """
    import time

    import ketch

    app = ketch.App("detach-default")
    other = ketch.App("detach-other")


    @app.function()
    def slow_double(x: int) -> int:
        time.sleep(2)
        return 2 * x


    @other.function()
    def unused() -> None:
        pass


    @app.local_entrypoint()
    def main(x: int = 4):
        call = slow_double.spawn(x)
        print("CALL", call.object_id)
"""


@pytest.mark.spec("C1")
def test_run_detach_name_and_ref_forms(server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    tag = uuid.uuid4().hex[:8]
    path = tmp_path / "detach_app.py"
    path.write_text(textwrap.dedent(DETACH_APP))
    name = f"detached-{tag}"
    proc = ketch(server.home, "run", "--detach", "--name", name, f"{path}::app.main", "--x", "21")
    out = ok(proc)
    assert "Detached" in proc.stderr
    call_id = re.search(r"^CALL (\S+)$", out, re.M).group(1)  # type: ignore[union-attr]
    # The command has returned; the app is still there and finishes the spawned call.
    rows = {r["name"]: r for r in json.loads(ok(ketch(server.home, "app", "list", "--json")))}
    assert rows[name]["state"] == "ephemeral" and rows[name]["running"] is True
    assert ketch_sdk.FunctionCall.from_id(call_id).get(timeout=60) == 42
    ok(ketch(server.home, "app", "stop", name, "-y"))
    rows = {r["name"]: r for r in json.loads(ok(ketch(server.home, "app", "list", "--json")))}
    assert rows[name]["state"] == "stopped"

    # Without --detach the app goes with the command.
    plain = f"plain-{tag}"
    ok(ketch(server.home, "run", "--name", plain, f"{path}::app"))
    rows = {r["name"]: r for r in json.loads(ok(ketch(server.home, "app", "list", "--json")))}
    assert rows[plain]["state"] == "stopped"

    # deploy and serve: file.py::app picks one of two apps, --name names it, --env places it.
    deployed_name = f"dep-{tag}"
    ok(ketch(server.home, "deploy", f"{path}::other", "--name", deployed_name, "--env", "staging"))
    rows = {r["name"]: r for r in json.loads(ok(ketch(server.home, "app", "list", "--json")))}
    assert rows[deployed_name]["environment"] == "staging"
    assert rows[deployed_name]["functions"] == ["unused"]
    ok(ketch(server.home, "app", "stop", deployed_name, "--env", "staging", "-y"))
    served = ok(
        ketch(
            server.home,
            "serve",
            f"{path}::app",
            "--name",
            f"srv-{tag}",
            "--timeout",
            "1",
            "--quiet",
        )
    )
    assert f"Serving app 'srv-{tag}'" in served
