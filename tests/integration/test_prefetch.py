"""The prefetch window, end to end: inputs sent to a container ahead of a free slot time
out from their start, survive their container's SIGKILL uncharged, and move to a new
version on a redeploy (_server/prefetch.py, the runtime's side in _runtime/entry.py)."""

from __future__ import annotations

import itertools
import threading
import uuid
from pathlib import Path
from typing import Any

import pytest
from cli_support import ketch as ketch_cli
from cli_support import ok, write

import ketch
from ketch.exception import FunctionTimeoutError
from supports import prefetching
from supports.web_helpers import server_status, wait_for

pytestmark = [pytest.mark.timeout(300)]


@pytest.fixture
def wide_window(monkeypatch: pytest.MonkeyPatch) -> None:
    # Read by the server `fresh_server` starts: a window for functions of any speed, so
    # that inputs of seconds wait at the container (the default sizes it to 20 ms of work).
    monkeypatch.setenv("KETCH_PREFETCH", "8")
    monkeypatch.setenv("KETCH_PREFETCH_MS", "600000")


def _prefetched() -> int:
    return int(server_status()["counters"].get("prefetched", 0))


@pytest.mark.spec("T1")
@pytest.mark.parametrize("kind", ["sync", "async"])
def test_a_prefetched_input_times_out_from_its_start(
    wide_window: None, fresh_server: Any, kind: str
) -> None:
    nap = prefetching.nap if kind == "sync" else prefetching.nap_async
    with prefetching.app.run(show_logs=False):
        # The first input measures the run time; the rest go to the one container at once
        # and each waits there behind the others, longer than the 3 s timeout in all.
        out = list(nap.map([0.01, 2.0, 2.0, 2.0, 4.0], return_exceptions=True))
        assert _prefetched() >= 3
    # The fourth was sent 4 s before it started: a clock from its send would have failed it.
    assert out[:4] == [0.01, 2.0, 2.0, 2.0], out
    # Its own run is what the timeout counts: 4 s of it are too long.
    assert isinstance(out[4], FunctionTimeoutError), out


@pytest.mark.spec("R6")
@pytest.mark.parametrize("kind", ["sync", "async"])
def test_a_killed_container_loses_no_prefetched_input_and_charges_none_a_crash(
    wide_window: None, fresh_server: Any, tmp_path: Path, kind: str
) -> None:
    kill_once = prefetching.kill_once if kind == "sync" else prefetching.kill_once_async
    # Inputs 1-4 each SIGKILL their container once, while the inputs after them wait in
    # its window: inputs 5-7 live through four crashes, more than an input may be charged
    # (MAX_CRASH_RERUNS), so any charge would fail them.
    markers = tmp_path / "markers"
    markers.mkdir()
    marker = str(markers)
    with prefetching.app.run(show_logs=False):
        args = [(i, marker, 1 <= i <= 4) for i in range(8)]
        out = list(kill_once.starmap(args))
        counters = server_status()["counters"]
    assert out == list(range(8))
    assert counters.get("crashes", 0) >= 4 and counters.get("prefetched", 0) >= 4
    assert sorted(p.name for p in markers.iterdir()) == [f"killed-{i}" for i in (1, 2, 3, 4)]


_VERSIONED = """
    import os
    import time

    import ketch

    app = ketch.App("{name}")


    @app.function(max_containers=1)
    def which(i: int, gate: str) -> str:
        if i == 1:
            while not os.path.exists(gate):  # held until the test has redeployed
                time.sleep(0.02)
        return "v{version}"
"""


@pytest.mark.spec("W7")
def test_a_redeploy_moves_prefetched_inputs_to_the_new_version(
    wide_window: None, fresh_server: Any, tmp_path: Path
) -> None:
    name = f"prefetch-roll-{uuid.uuid4().hex[:8]}"
    app_file = tmp_path / "roll.py"
    gate = tmp_path / "gate"
    write(app_file, _VERSIONED.format(name=name, version=1))
    ok(ketch_cli(fresh_server.home, "deploy", str(app_file)))
    which = ketch.Function.from_name(name, "which")
    out: list[str] = []
    args = [(i, str(gate)) for i in range(6)]
    mapper = threading.Thread(target=lambda: out.extend(which.starmap(args)))
    mapper.start()
    try:
        # Input 1 runs (held); 2-5 wait in the v1 container's window.
        wait_for(lambda: _prefetched() >= 4, 60, what="inputs sent ahead")
        write(app_file, _VERSIONED.format(name=name, version=2))
        ok(ketch_cli(fresh_server.home, "deploy", str(app_file)))
    finally:
        gate.touch()
        mapper.join(120)
    assert out == ["v1", "v1", "v2", "v2", "v2", "v2"]


@pytest.mark.spec("S4")
def test_sync_and_async_inputs_sent_ahead_never_overlap(
    wide_window: None, fresh_server: Any, tmp_path: Path
) -> None:
    # max_inputs=1: a sync method's inputs run on the input thread and an async one's as
    # tasks; inputs of both kinds waiting in one container still run one at a time.
    log = str(tmp_path / "runs")
    with prefetching.app.run(show_logs=False):
        mixed = prefetching.Mixed()
        assert mixed.sync_step.remote(log, -1) == -1  # measures the run time: the window opens
        calls = [(mixed.sync_step if i % 2 else mixed.async_step).spawn(log, i) for i in range(8)]
        assert [c.get(timeout=120) for c in calls] == list(range(8))
        assert _prefetched() >= 3
    runs = sorted(tuple(map(float, line.split())) for line in Path(log).read_text().splitlines())
    assert len(runs) == 9
    for (_, end), (start, _) in itertools.pairwise(runs):
        assert start >= end, runs
