"""Spawned calls (B3) and handles looked up by name (A11), across processes, against a
deployed app."""

from __future__ import annotations

import builtins
import json
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import ketch
from ketch._client.deploy import ApiClient
from ketch._utils.aio import run_sync
from ketch.exception import InputCancellation, NotFoundError
from ketch.functions import FunctionCall
from supports.deployed import app, slow_double, stall

APP = app.name
assert APP is not None


@pytest.fixture(scope="module")
def deployed(ketch_server: Any) -> Iterator[Any]:
    app.deploy()
    yield ketch_server
    run_sync(ApiClient().call("POST", f"/v1/apps/{APP}/stop"))


def run_elsewhere(server: Any, code: str, *args: str) -> Any:
    """Run `code` in a new Python process configured for the server; returns its JSON."""
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        env=server.env,
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.spec("B3")
def test_function_call_is_importable_from_both_places() -> None:
    import ketch.functions

    assert ketch.FunctionCall is ketch.functions.FunctionCall is FunctionCall


@pytest.mark.spec("B3")
def test_spawn_poll_and_get_from_another_process(server: Any, deployed: Any) -> None:
    call = slow_double.spawn(21, seconds=2.0)
    assert isinstance(call, FunctionCall)
    assert call.object_id.startswith("fc-")
    with pytest.raises(TimeoutError) as info:
        call.get(timeout=0)
    assert type(info.value) is builtins.TimeoutError
    with pytest.raises(builtins.TimeoutError):
        call.get(timeout=0.2)

    # Another process, knowing nothing but the id, waits for the result.
    got = run_elsewhere(
        server,
        """
        import json, sys
        from ketch.functions import FunctionCall
        print(json.dumps(FunctionCall.from_id(sys.argv[1]).get(timeout=60)))
    """,
        call.object_id,
    )
    assert got == 42
    assert call.get(timeout=0) == 42  # and the result stays for this process too

    # The other way round: spawned by name elsewhere, collected here.
    call_id = run_elsewhere(
        server,
        """
        import json, sys
        import ketch
        f = ketch.Function.from_name(sys.argv[1], "slow_double")
        print(json.dumps(f.spawn(50).object_id))
    """,
        APP,
    )
    assert FunctionCall.from_id(call_id).get(timeout=60) == 100


@pytest.mark.spec("B3")
def test_cancel_and_gather(server: Any, deployed: Any, tmp_path: Path) -> None:
    marker = tmp_path / "finished"
    doomed = stall.spawn(1.5, str(marker))
    started = time.monotonic()
    doomed.cancel()
    with pytest.raises(InputCancellation):
        doomed.get(timeout=10)

    calls = [slow_double.spawn(i, seconds=0.3 * (3 - i)) for i in range(4)]
    assert FunctionCall.gather(*calls) == [0, 2, 4, 6]
    assert FunctionCall.gather() == []
    # A spawned call that fails hands its exception to whoever gets the result.
    failing = slow_double.spawn(-1)
    with pytest.raises(ValueError, match="negative"):
        failing.get(timeout=30)
    with pytest.raises(ValueError, match="negative"):
        FunctionCall.gather(slow_double.spawn(1), FunctionCall.from_id(failing.object_id))

    # A cancelled call never gets to finish its work.
    time.sleep(max(0.0, 2.5 - (time.monotonic() - started)))
    assert not marker.exists()


@pytest.mark.spec("A11")
def test_from_name_in_another_process(server: Any, deployed: Any) -> None:
    out = run_elsewhere(
        server,
        """
        import json, sys
        import ketch
        from ketch.exception import NotFoundError
        app_name = sys.argv[1]
        out = {}
        f = ketch.Function.from_name(app_name, "slow_double")
        out["remote"] = f.remote(4)
        out["map"] = list(f.map([1, 2, 3]))
        Greeter = ketch.Cls.from_name(app_name, "Greeter")
        hi = Greeter(greeting="hi").greet.remote("ann")
        hey = Greeter(greeting="hey").greet.remote("bob")
        out["greet"] = [hi["text"], hey["text"]]
        out["two_pools"] = hi["pid"] != hey["pid"]
        out["letters"] = list(Greeter().letters.remote_gen("abc"))
        try:
            ketch.Function.from_name(app_name, "no_such_function").remote(1)
        except NotFoundError as exc:
            out["missing"] = str(exc)
        print(json.dumps(out))
    """,
        APP,
    )
    assert out["remote"] == 8
    assert out["map"] == [2, 4, 6]
    assert out["greet"] == ["hi, ann", "hey, bob"]
    assert out["two_pools"] is True
    assert out["letters"] == ["a", "b", "c"]
    assert APP in out["missing"] and "no_such_function" in out["missing"]


@pytest.mark.spec("A11")
def test_missing_app_or_function_raises_not_found(server: Any, deployed: Any) -> None:
    with pytest.raises(NotFoundError) as info:
        ketch.Function.from_name("no-such-app", "some_function").remote()
    assert "no-such-app" in str(info.value) and "some_function" in str(info.value)

    with pytest.raises(NotFoundError) as info:
        ketch.Function.from_name(APP, "not_there").spawn()
    assert APP in str(info.value) and "not_there" in str(info.value)

    with pytest.raises(NotFoundError) as info:
        ketch.Cls.from_name(APP, "NoSuchClass")().run.remote()
    assert APP in str(info.value) and "NoSuchClass" in str(info.value)

    with pytest.raises(NotFoundError) as info:
        ketch.Function.from_name("no-such-app", "other").hydrate()
    assert "no-such-app" in str(info.value) and "other" in str(info.value)

    with pytest.raises(NotFoundError, match="no-such-env"):
        ketch.Function.from_name(APP, "slow_double", environment_name="no-such-env").remote(1)
    assert ketch.Function.from_name(APP, "slow_double", environment_name="main").remote(2) == 4
