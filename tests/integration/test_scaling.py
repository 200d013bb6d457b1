"""Scale to zero, min_containers, and one function's backlog not delaying another (S1, S4)."""

from __future__ import annotations

import threading
import time

import pytest

from ketch._client.deploy import ApiClient
from ketch._utils.aio import run_sync
from supports.scaling import app, kept_warm, other, quick_to_sleep, serial


def _containers(app_id: str) -> list[dict[str, object]]:
    status = run_sync(ApiClient().call("GET", "/v1/status"))
    return [c for c in status["containers"].values() if c["app_id"] == app_id]


def _wait(cond: object, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():  # type: ignore[operator]
            return True
        time.sleep(0.1)
    return False


@pytest.mark.spec("S1")
def test_scale_to_zero_and_min_containers(server: object) -> None:
    with app.run(show_logs=False):
        app_id = app.app_id
        assert app_id is not None
        # min_containers starts a container with no traffic at all.
        assert _wait(lambda: any(c["function"] == "kept_warm" for c in _containers(app_id)), 30)
        quick_to_sleep.remote()
        kept_warm.remote()
        assert any(c["function"] == "quick_to_sleep" for c in _containers(app_id))
        # After the 1 s window the idle container goes; the warm one stays.
        assert _wait(
            lambda: not any(c["function"] == "quick_to_sleep" for c in _containers(app_id)), 15
        )
        time.sleep(2.5)
        assert any(c["function"] == "kept_warm" for c in _containers(app_id))


@pytest.mark.spec("S4")
def test_fifo_and_no_cross_function_delay(server: object) -> None:
    with app.run(show_logs=False):
        serial.remote(0)  # warm both, so that only queueing is measured
        other.remote()
        done: list[tuple[int, float]] = []

        def call(i: int) -> None:
            done.append((i, serial.remote(0.6)))

        threads = []
        for i in range(5):
            t = threading.Thread(target=call, args=(i,))
            t.start()
            threads.append(t)
            time.sleep(0.05)  # submit in a known order
        # While `serial` has a backlog of ~3 s, another function answers in between.
        assert other.remote() == "other"
        other_done = time.time()
        for t in threads:
            t.join(30)
        finish_order = [i for i, _ in sorted(done, key=lambda x: x[1])]
        assert finish_order == list(range(5))
        assert other_done < max(stamp for _, stamp in done)


@pytest.mark.spec("A2")
def test_single_use_containers_are_honoured(server: object) -> None:
    from supports.scaling import fresh_each_time

    with app.run(show_logs=False):
        pids = [fresh_each_time.remote() for _ in range(3)]
    assert len(set(pids)) == 3


@pytest.mark.spec("A2")
def test_unsupported_semantic_parameters_refuse_the_deploy(server: object) -> None:
    import ketch
    from ketch.exception import InvalidError

    other = ketch.App("refusals")

    with pytest.raises(InvalidError, match="schedule"):

        @other.function(schedule=object(), serialized=True)
        def scheduled() -> None: ...

    listed = run_sync(ApiClient().call("GET", "/v1/apps"))
    assert not any(a["name"].startswith("refusals") for a in listed)
