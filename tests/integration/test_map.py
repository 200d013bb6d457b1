"""`.map` and friends (B4): ordering, failures, starmap, for_each, spawn_map, kwargs, and a
map over 10**6 lazily consumed inputs in bounded memory."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from supports.mapping import app, combine, delayed, fail_on, touch


@pytest.fixture(scope="module")
def running(ketch_server: object) -> Iterator[None]:
    with app.run(show_logs=False):
        yield


@pytest.mark.spec("B4")
def test_map_orders_outputs_unless_told_not_to(server: object, running: None) -> None:
    # Later inputs finish first: input i sleeps (3 - i) * 0.4 s, all running at once.
    inputs = [0, 1, 2, 3]
    pauses = [(3 - i) * 0.4 for i in inputs]
    assert list(delayed.map(inputs, pauses)) == [0, 1, 2, 3]
    assert list(delayed.map(inputs, pauses, order_outputs=False)) == [3, 2, 1, 0]
    assert list(delayed.map([], [])) == []


@pytest.mark.spec("B4")
def test_map_failures_raise_in_place_or_come_back_inline(server: object, running: None) -> None:
    seen = []
    with pytest.raises(ValueError, match="input 3 is bad"):
        for out in fail_on.map(range(6)):
            seen.append(out)
    assert seen == [0, 10, 20]

    results = list(fail_on.map(range(6), return_exceptions=True))
    assert results[:3] == [0, 10, 20] and results[4:] == [40, 50]
    assert type(results[3]) is ValueError and str(results[3]) == "input 3 is bad"

    # kwargs= goes to every input.
    assert list(fail_on.map(range(4), kwargs={"bad": 99})) == [0, 10, 20, 30]


@pytest.mark.spec("B4")
def test_starmap_and_kwargs(server: object, running: None) -> None:
    pairs = [(1, 2), (3, 4), (5, 6)]
    assert list(combine.starmap(pairs)) == [3, 7, 11]
    assert list(combine.starmap(pairs, kwargs={"scale": 10, "offset": 1})) == [31, 71, 111]
    assert list(combine.map([1, 2], [10, 20], kwargs={"scale": 2})) == [22, 44]
    # Several iterables are zipped, the shortest one deciding the count.
    assert list(combine.map([1, 2, 3], [10, 20])) == [11, 22]


def _wait_for_files(directory: Path, names: set[str], timeout: float = 30.0) -> set[str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        present = {p.name for p in directory.iterdir()}
        if names <= present:
            return present
        time.sleep(0.1)
    return {p.name for p in directory.iterdir()}


@pytest.mark.spec("B4")
def test_for_each_and_spawn_map(server: object, running: None, tmp_path: Path) -> None:
    each = tmp_path / "each"
    each.mkdir()
    names = [f"f{i}" for i in range(5)]
    assert touch.for_each([str(each)] * 5, names) is None
    # for_each returns once every input has run.
    assert {p.name for p in each.iterdir()} == set(names)

    with pytest.raises(RuntimeError, match="refusing bad"):
        touch.for_each([str(each)] * 2, ["g0", "bad0"])
    touch.for_each([str(each)] * 2, ["h0", "bad1"], ignore_exceptions=True)
    assert (each / "h0").exists()

    spawned = tmp_path / "spawned"
    spawned.mkdir()
    assert touch.spawn_map([str(spawned)] * 4, [f"s{i}" for i in range(4)]) is None
    # spawn_map does not wait for results; the inputs still all run.
    want = {f"s{i}" for i in range(4)}
    assert _wait_for_files(spawned, want) == want


BIG_MAP = """
import json, resource, sys

from supports.bulk import app, inc

N = 10**6
state = {"produced": 0, "at_first": None}


def inputs():
    for i in range(N):
        state["produced"] = i + 1
        yield i


def peak_mib():
    # ru_maxrss would do, but a child started with vfork inherits its parent's peak (here,
    # pytest's, after the 256 MiB payload test); VmHWM is this process's own.
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


with app.run(show_logs=False):
    assert inc.remote(0) == 1
    baseline = peak_mib()
    count = 0
    for i, out in enumerate(inc.map(inputs())):
        if state["at_first"] is None:
            state["at_first"] = state["produced"]
        if out != i + 1:
            raise SystemExit(f"output {i} is {out}")
        count += 1
print(json.dumps({"count": count, "at_first": state["at_first"], "baseline": baseline,
                  "peak": peak_mib()}))
"""


@pytest.mark.spec("B4")
@pytest.mark.timeout(330)
def test_map_over_a_million_inputs_in_bounded_memory(server: Any) -> None:
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(BIG_MAP)],
        env=server.env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    elapsed = time.monotonic() - started
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    print(f"map of 10**6: {elapsed:.1f}s, {report}", file=sys.stderr)
    assert report["count"] == 10**6
    # The generator had barely started when the first result came back...
    assert report["at_first"] < 10**5, report
    # ...and the million inputs never sat in memory together (a list of them alone, with
    # their pickled requests, would take hundreds of MiB).
    assert report["peak"] < 400, report
    assert report["peak"] - report["baseline"] < 100, report
