"""Kill tests: the server and containers die the hard way while work is in flight.

What is promised (docs/security.md, "Availability under failures"): a spawned call that the server
accepted gets exactly one result, whatever dies; the function itself runs at least once,
and again only when its previous run had not delivered a result (it was running in a
container, or queued, when the server or the container died). A call whose result was
stored never runs again. The tests check both halves with a journal each run writes
(`supports/chaos_app.py`).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import os
import re
import signal
import sqlite3
import threading
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import httpx
import pytest
from cli_support import ketch, ok, write

import ketch as ketch_sdk
from ketch._client.client import Client
from supports import chaos_app, ident
from supports.web_helpers import api, containers, wait_for

# ("start" | "end", input number, the process that ran it: a `supports.ident` identity)
Entry = tuple[str, int, str]


def _journal(path: Path) -> list[Entry]:
    if not path.exists():
        return []
    entries = []
    for line in path.read_text().splitlines():
        word, i, who = line.split()
        entries.append((word, int(i), who))
    return entries


def _count(entries: Iterable[Entry], word: str) -> collections.Counter[int]:
    return collections.Counter(i for w, i, _ in entries if w == word)


def _gone(who: str) -> bool:
    """True once the process `who` (an identity from the journal) has exited (a zombie
    nobody has reaped yet counts as exited)."""
    return not ident.alive(who)


def _close_clients() -> None:
    """Close this process's SDK connections, so that none brings a killed server back on
    its own: the test restarts it when it has looked at what the dead one left."""
    from ketch._client.client import _open_clients
    from ketch._utils.aio import run_sync

    for client in [Client._current, *_open_clients]:
        if client is not None:
            with contextlib.suppress(Exception):
                run_sync(client.close())
    Client.reset()


def _call_states(home: Path) -> dict[str, str]:
    """call id -> status, as the (dead) server left them in its store."""
    with contextlib.closing(sqlite3.connect(home / "ketch.db")) as db:
        return dict(db.execute("SELECT call_id, status FROM calls").fetchall())


async def _spawn(
    journal: Path, gate: Path, numbers: Iterable[int], free_below: int
) -> list[ketch_sdk.FunctionCall]:
    return list(
        await asyncio.gather(
            *(chaos_app.work.spawn.aio(str(journal), str(gate), i, free_below) for i in numbers)
        )
    )


N_CALLS = 1000
N_FREE = 100  # inputs that finish before the kill; the others wait for the gate


@pytest.mark.spec("B3")
@pytest.mark.spec("C5")
@pytest.mark.timeout(300)
def test_kill9_with_1000_spawned_calls_in_flight(fresh_server: Any, tmp_path: Path) -> None:
    chaos_app.app.deploy()
    journal, gate = tmp_path / "journal", tmp_path / "gate"
    # The free inputs are accepted first, so FIFO dispatch runs them before any gated one.
    calls = asyncio.run(_spawn(journal, gate, range(N_FREE), N_FREE))
    calls += asyncio.run(_spawn(journal, gate, range(N_FREE, N_CALLS), N_FREE))
    assert len({c.object_id for c in calls}) == N_CALLS

    # Kill once the free calls have their results and gated ones run in the container.
    ketch_sdk.FunctionCall.gather(*calls[:N_FREE])
    wait_for(
        lambda: any(i >= N_FREE for _, i, _ in _journal(journal)),
        timeout=120,
        what="gated inputs to start",
    )
    _close_clients()
    fresh_server.kill9()
    # The containers go with their server; wait for that before reading what they left.
    pids = {pid for _, _, pid in _journal(journal)}
    wait_for(lambda: all(_gone(pid) for pid in pids), timeout=30, what="containers to exit")
    before = _journal(journal)
    states = _call_states(fresh_server.home)
    done_before = {i for i, c in enumerate(calls) if states[c.object_id] != "pending"}
    interrupted = {i for i in _count(before, "start") if i not in done_before}
    assert set(range(N_FREE)) <= done_before and done_before.isdisjoint(range(N_FREE, N_CALLS))
    assert interrupted and len(interrupted) < N_CALLS - N_FREE

    gate.touch()
    fresh_server.start()
    results = ketch_sdk.FunctionCall.gather(*calls)
    assert [value for value, _ in results] == [3 * i for i in range(N_CALLS)]
    # Each result is the one its call stored: from the first server's container for the
    # calls that had finished, from a new one for the others.
    misplaced = [
        (i, who) for i, (_, who) in enumerate(results) if (who in pids) != (i in done_before)
    ]
    assert not misplaced, (sorted(pids), misplaced[:10])
    # Asking again gives the same answer.
    assert ketch_sdk.FunctionCall.from_id(calls[-1].object_id).get(timeout=30) == results[-1]

    after = _journal(journal)[len(before) :]
    starts_after, ends_after = _count(after, "start"), _count(after, "end")
    # Calls with a stored result never ran again; every other call ran exactly once more.
    assert not done_before & set(starts_after), sorted(done_before & set(starts_after))[:10]
    pending = set(range(N_CALLS)) - done_before
    assert starts_after == collections.Counter(pending), {
        i: n for i, n in starts_after.items() if n != 1
    } or sorted(pending - set(starts_after))
    assert ends_after == starts_after


@pytest.mark.spec("B3")
@pytest.mark.spec("S3")
def test_resumed_calls_are_not_refused_by_a_lower_queue_bound(
    fresh_server: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Calls accepted before a crash are re-queued by the next server, which never refuses
    them, even when its queue bound is now lower than what is waiting."""
    chaos_app.app.deploy()
    journal, gate = tmp_path / "journal", tmp_path / "gate"
    calls = asyncio.run(_spawn(journal, gate, range(30), 0))
    wait_for(lambda: _journal(journal), timeout=60, what="a call to start")
    _close_clients()
    fresh_server.kill9()
    gate.touch()
    monkeypatch.setenv("KETCH_MAX_QUEUE", "5")
    fresh_server.start()
    results = ketch_sdk.FunctionCall.gather(*calls)
    assert [value for value, _ in results] == [3 * i for i in range(30)]


@pytest.mark.spec("B3")
def test_a_spawn_sent_again_is_accepted_once(server: Any, tmp_path: Path) -> None:
    """After a reconnect the client sends its unanswered requests again; a spawn whose
    first copy was stored (the answer was lost with the connection) must be answered as
    accepted and run once."""
    journal, gate = tmp_path / "journal", tmp_path / "gate"
    gate.touch()
    work = chaos_app.work
    call_id = f"fc-{uuid.uuid4().hex}"

    async def spawn_twice() -> None:
        fid = await work._resolve()
        client = await Client.current()
        msg = {
            "t": "spawn",
            "fid": fid,
            "iid": call_id,
            "req": work._request((str(journal), str(gate), 7), {}),
        }
        await client.request(msg)
        await client.request(msg)  # what a reconnecting client sends

    with chaos_app.app.run(show_logs=False):
        from ketch._utils.aio import run_sync

        run_sync(spawn_twice())
        assert ketch_sdk.FunctionCall.from_id(call_id).get(timeout=60)[0] == 21
    assert _count(_journal(journal), "start") == {7: 1}


@pytest.mark.spec("R6")
def test_container_sigkill_with_inputs_in_flight(server: Any, tmp_path: Path) -> None:
    """A container killed from outside (the OOM killer, an operator) with inputs of several
    callers in flight: each input runs again on a new container, and every caller gets its
    own result."""
    journal, gate = tmp_path / "journal", tmp_path / "gate"
    work = chaos_app.work
    j, g = str(journal), str(gate)
    results: dict[int, Any] = {}

    def remote(i: int) -> None:
        results[i] = work.remote(j, g, i)

    def mapped() -> None:
        for i, value in zip(range(8, 16), work.map([j] * 8, [g] * 8, range(8, 16)), strict=True):
            results[i] = value

    with chaos_app.app.run(show_logs=False):
        callers = [threading.Thread(target=remote, args=(i,)) for i in range(8)]
        callers.append(threading.Thread(target=mapped))
        for t in callers:
            t.start()
        spawned = {i: work.spawn(j, g, i) for i in range(16, 20)}
        started = wait_for(
            lambda: len(_count(_journal(journal), "start")) == 20 and _journal(journal),
            timeout=90,
            what="20 inputs to start",
        )
        (victim,) = {who for _, _, who in started}  # all in the pool's one container
        os.kill(ident.host_pid(victim), signal.SIGKILL)
        wait_for(lambda: _gone(victim), timeout=30, what="the container to die")
        gate.touch()  # only now: the killed container could not have finished anything
        for t in callers:
            t.join(90)
        for i, call in spawned.items():
            results[i] = call.get(timeout=90)

    assert sorted(results) == list(range(20))
    assert all(results[i][0] == 3 * i and results[i][1] != victim for i in results), results
    entries = _journal(journal)
    in_victim = [e for e in entries if e[2] == victim]
    elsewhere = [e for e in entries if e[2] != victim]
    assert _count(in_victim, "start") == collections.Counter(range(20))
    assert not _count(in_victim, "end")
    assert _count(elsewhere, "start") == _count(elsewhere, "end") == collections.Counter(range(20))


@pytest.mark.spec("R6")
def test_operator_stop_of_a_starting_container_fails_no_waiting_call(
    server: Any, tmp_path: Path
) -> None:
    """`ketch container stop` on a container that is still starting is not a start-up
    failure of the function (R5): the call waiting for it is served by a replacement."""
    gate, entered = tmp_path / "gate", tmp_path / "entered"
    result: dict[str, Any] = {}

    with chaos_app.app.run(show_logs=False):
        obj = chaos_app.SlowStart(gate=str(gate), entered=str(entered))

        def call() -> None:
            try:
                result["pid"] = obj.pid.remote()
            except Exception as exc:
                result["error"] = exc

        caller = threading.Thread(target=call)
        caller.start()
        # Its process runs the @enter hook: the container is started and still starting.
        wait_for(lambda: _journal(entered), timeout=90, what="the first container to start")
        (first,) = [c for c in containers(chaos_app.app.app_id) if c["state"] == "starting"]
        api("POST", f"/v1/containers/{first['id']}/stop")
        (_, _, first_pid) = _journal(entered)[0]
        wait_for(lambda: _gone(first_pid), timeout=30, what="the stopped container to exit")
        gate.touch()
        caller.join(90)
    assert "error" not in result, result["error"]
    assert result["pid"] != first_pid
    assert len(_journal(entered)) == 2  # the replacement ran its own hook


REDEPLOY_APP = """
    import time

    import ketch

    app = ketch.App("{name}")


    @app.function()
    @ketch.concurrent(max_inputs=20)
    @ketch.fastapi_endpoint()
    def page() -> str:
        time.sleep(0.05)  # so that requests are in flight while versions change
        return "v{version}"


    @app.function()
    @ketch.concurrent(max_inputs=20)
    def which() -> str:
        time.sleep(0.05)
        return "v{version}"
"""


@pytest.mark.spec("W7")
@pytest.mark.timeout(300)
def test_redeploy_under_load_fails_nothing(server: Any, tmp_path: Path) -> None:
    """Web requests on several connections and `.remote()` calls run without a pause
    across two redeploys: none fails, and none that starts after a deploy has returned is
    answered by an older version."""
    name = f"chaos-roll-{uuid.uuid4().hex[:8]}"
    app_file = tmp_path / "roll.py"
    home = server.home

    def deploy(version: int) -> str:
        write(app_file, REDEPLOY_APP.format(name=name, version=version))
        out = ok(ketch(home, "deploy", str(app_file)))
        match = re.search(r"^\s+page\s+(http://127\.0\.0\.1:\d+)$", out, re.M)
        assert match, out
        return match.group(1)

    url = deploy(1)
    deployed = [1]  # the newest version whose deploy command has returned
    stop = threading.Event()
    # per loader: (newest version deployed when the request started, answer or error)
    keys = ["web0", "web1", "web2", "remote0", "remote1"]
    seen: dict[str, list[tuple[int, str]]] = {key: [] for key in keys}

    def loop(key: str, request: Callable[[], str]) -> None:
        while not stop.is_set():
            at_start = deployed[-1]
            try:
                answer = request()
            except Exception as exc:
                answer = f"error: {exc!r}"
            seen[key].append((at_start, answer))

    def web(key: str) -> None:
        with httpx.Client(timeout=60) as client:

            def get() -> str:
                r = client.get(url)
                return str(r.json()) if r.status_code == 200 else f"status {r.status_code}"

            loop(key, get)

    which = ketch_sdk.Function.from_name(name, "which")
    loaders = [
        threading.Thread(target=web, args=(key,))
        if key.startswith("web")
        else threading.Thread(target=loop, args=(key, which.remote))
        for key in keys
    ]

    def each_saw(version: int, times: int) -> bool:
        return all(
            sum(1 for v, a in s if v == version and a == f"v{version}") >= times
            for s in seen.values()
        )

    try:
        for t in loaders:
            t.start()
        for version in (1, 2, 3):
            if version > 1:
                assert deploy(version) == url
                deployed.append(version)
            wait_for(
                functools.partial(each_saw, version, 5),
                timeout=120,
                what=f"every loader to get v{version} answers",
            )
    finally:
        stop.set()
        for t in loaders:
            t.join(60)
        ketch(home, "app", "stop", name, "-y")

    for key, answers in seen.items():
        failed = [a for _, a in answers if not re.fullmatch(r"v\d", a)]
        assert not failed, (key, failed[:5])
        versions = [int(a[1:]) for _, a in answers]
        assert versions == sorted(versions), (key, versions)  # never back to an older one
        stale = [(v, a) for v, a in answers if int(a[1:]) < v]
        assert not stale, (key, stale[:5])
