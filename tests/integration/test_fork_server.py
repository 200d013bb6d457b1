"""The fork server: containers forked from a template that has loaded the function behave
like plain ones (own pid and process group, fresh random state, their own connection and
web socket, their own logs, crashes handled per R6); where forking is unsafe containers
start as plain processes and the log says why; `@enter(snap=True)` runs once per template.
"""

from __future__ import annotations

import os
import signal
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from ketch.exception import ExecutionError
from supports import forking, forking_slow, forking_threads
from supports.ident import ancestors, cmdline, host_pid, state
from supports.web_helpers import app_log, app_running, runtime_pids, wait_for, web_url


def _is_template(pid: int) -> bool:
    """Whether the host process `pid` is a fork-server template."""
    return "ketch._runtime.template" in cmdline(pid)


def _parent_is_template(who: dict[str, Any]) -> bool:
    """Whether a container's parent within its pid namespace is a template (a forked one
    shares its template's namespace, sandboxed or not). Read while the app runs."""
    return _is_template(host_pid(who["ppid"]))


def _assert_started_plain(who: dict[str, Any], server_pid: int | None) -> None:
    """A plain start: the server started the container (through the sandbox, when there is
    one), with no fork-server template on the way. Read while the app runs."""
    assert server_pid is not None
    chain = ancestors(host_pid(who["pid"]))
    assert server_pid in chain, (chain, [cmdline(p) for p in chain])
    between = chain[: chain.index(server_pid)]
    assert not any(_is_template(p) for p in between), [cmdline(p) for p in between]


@pytest.mark.spec("S2")
def test_forked_containers_are_processes_of_their_own(server: Any) -> None:
    with forking.app.run(show_logs=False):
        # Two parameter sets: two pools, two containers, one template (no snapshot).
        a = forking.Who(n=1).me.remote()
        b = forking.Who(n=2).me.remote()
        template = a["ppid"]
        # /proc is read while the app runs: a stopped app's template goes.
        assert _parent_is_template(a) and b["ppid"] == template
        hosts = {host_pid(a["pid"]), host_pid(b["pid"]), host_pid(template), server.pid()}
    assert len(hosts) == 4
    # The module was imported once, in the template; the containers inherited it.
    assert a["imported_in"] == b["imported_in"] == template
    assert a["import_random"] == b["import_random"]
    assert len({a["pid"], b["pid"], template}) == 3
    # Each is its own process group, so that the backend kills all of it and nothing else.
    assert a["pgid"] == a["pid"] and b["pgid"] == b["pid"]
    assert a["container"] != b["container"]
    # Fresh random state per child (random reseeds at fork; numpy's is reseeded by ketch).
    assert a["random"] != b["random"]
    if a["numpy_random"] is not None:
        assert a["numpy_random"] != b["numpy_random"]


@pytest.mark.spec("W1", "S2")
def test_a_forked_web_endpoint_answers_http(server: Any) -> None:
    with forking.app.run(show_logs=False):
        url = web_url(forking.web_me)
        resp = httpx.get(url, timeout=60)
        assert resp.status_code == 200, resp.text
        body = resp.json()
        assert _parent_is_template(body) and body["pid"] != body["ppid"]
        assert body["imported_in"] == body["ppid"]
        assert httpx.get(url, timeout=60).json()["pid"] == body["pid"]  # the same warm one


@pytest.mark.spec("B8", "O1")
def test_a_forked_container_logs_under_its_own_id(server: Any) -> None:
    with app_running(forking.app) as app_id:
        me = forking.shout.remote("hello")
        assert _parent_is_template(me)
        line = f"shout: hello from {me['container']}"
        found = wait_for(lambda: [e for e in app_log(app_id) if e["line"] == line], 30)
    assert [e["container"] for e in found] == [me["container"]]
    assert found[0]["stream"] == "stdout"


@pytest.mark.spec("R6")
def test_killing_a_forked_container_is_a_crash_and_its_input_runs_again(
    server: Any, tmp_path: Path
) -> None:
    marker = tmp_path / "first-run"
    with forking.app.run(show_logs=False), ThreadPoolExecutor(1) as pool:
        call = pool.submit(forking.killed_once.remote, str(marker))
        first = wait_for(lambda: marker.exists() and marker.read_text(), 60)
        victim = host_pid(first)
        assert _is_template(_parent(victim))
        os.kill(victim, signal.SIGKILL)
        result = call.result(timeout=120)
        # The input ran again, in another container, without any retries configured.
        assert result["pid"] != first
        assert _parent_is_template(result)


def _parent(pid: int) -> int:
    """The host pid of a host process's parent."""
    return ancestors(pid)[0]


@pytest.mark.spec("S2")
def test_a_module_that_starts_threads_gets_plain_containers_and_says_why(server: Any) -> None:
    with app_running(forking_threads.app) as app_id:
        me = forking_threads.me.remote()
        # A plain start: the server started the container, not a template.
        _assert_started_plain(me, server.pid())
        lines = [e["line"] for e in app_log(app_id) if e["stream"] == "system"]
    why = [ln for ln in lines if "fork server not used" in ln]
    assert why and "thread" in why[0] and "import-ticker" in why[0], lines


@pytest.mark.spec("T2", "R5")
def test_a_template_slower_than_startup_timeout_fails_the_start(server: Any) -> None:
    with app_running(forking_slow.app) as app_id:
        for _ in range(2):  # the template's start, then a plain one: both give up in time
            with pytest.raises(ExecutionError, match="startup_timeout=2s"):
                forking_slow.f.remote()
            # Nothing of the function keeps running: no container, no template.
            wait_for(lambda: not runtime_pids(app_id), 30, what="no process of the app")
        lines = [e["line"] for e in app_log(app_id) if e["stream"] == "system"]
    # The first start waited for the template; the second, a plain start, says why.
    assert any("template took longer than startup_timeout=2s" in ln for ln in lines), lines


@pytest.mark.spec("A6")
def test_snap_enter_runs_once_in_the_template_and_plain_enter_per_container(
    server: Any, tmp_path: Path
) -> None:
    counters = str(tmp_path)
    with forking.app.run(show_logs=False):
        snap = forking.Snap(counters=counters)
        # Three calls at once: three containers of one pool (max_inputs=1).
        calls = [snap.hold.spawn(3.0) for _ in range(3)]
        results = [c.get(timeout=120) for c in calls]
        template = {r["ppid"] for r in results}
        assert len(template) == 1 and _parent_is_template(results[0])
    pids = {r["pid"] for r in results}
    assert len(pids) == 3
    snap_runs = (tmp_path / "snap").read_text().split()
    enter_runs = (tmp_path / "enter").read_text().split()
    assert snap_runs == [str(next(iter(template)))]  # once, in the template
    assert sorted(enter_runs) == sorted(str(p) for p in pids)  # once in each container
    assert {r["loaded_in"] for r in results} == template  # state set by the snap hook


@pytest.fixture
def no_fork_server(monkeypatch: pytest.MonkeyPatch) -> None:
    # Read by the server that `fresh_server` starts (it is requested after this one).
    monkeypatch.setenv("KETCH_FORK_SERVER", "0")


@pytest.mark.spec("C8")
def test_the_fork_server_can_be_turned_off(no_fork_server: None, fresh_server: Any) -> None:
    with forking.app.run(show_logs=False):
        me = forking.Who(n=1).me.remote()
        _assert_started_plain(me, fresh_server.pid())
    assert me["imported_in"] == me["pid"]


def test_no_template_outlives_its_server(fresh_server: Any) -> None:
    with forking.app.run(show_logs=False):
        me = forking.Who(n=1).me.remote()
        assert _parent_is_template(me)
        template, container = host_pid(me["ppid"]), host_pid(me["pid"])
    fresh_server.kill9()
    # The template sees its control socket close and leaves; the container sees its
    # connection to the server close and leaves too.
    assert wait_for(lambda: not _alive(template) and not _alive(container), 30)


def _alive(pid: int) -> bool:
    """Whether the host process `pid` still runs (a zombie does not)."""
    return state(pid) not in (None, "Z")
