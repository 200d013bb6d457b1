"""The function handle API through a real server and containers (issue 15): App.lookup
both ways, per-handle pools for plain functions (with_options / with_concurrency /
with_batching), update_autoscaler live with no redeploy (kept over a restart, reset by the
next deploy), and get_current_stats' backlog and runners."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, cast

import pytest

import ketch
from ketch._client.deploy import ApiClient
from ketch._utils.aio import run_sync
from ketch.exception import FunctionTimeoutError, InvalidError, NotFoundError
from supports import fnapi_app

pytestmark = pytest.mark.spec("C7")


def _api(method: str, path: str, **kwargs: Any) -> Any:
    return run_sync(ApiClient().call(method, path, **kwargs))


def _until(what: str, check: Callable[[], bool], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.1)


def _live_version(name: str) -> int:
    rows = _api("GET", f"/v1/apps/{name}/history")["versions"]
    return int(next(r["version"] for r in rows if r["live"]))


@pytest.fixture
def deployed_name(server: object) -> Iterator[str]:
    name = f"fnapi-{uuid.uuid4().hex[:8]}"
    fnapi_app.app.deploy(name=name)
    yield name
    _api("POST", f"/v1/apps/{name}/stop")


def test_app_lookup_finds_a_deployed_app_or_makes_an_empty_one(server: object) -> None:
    name = f"lookup-{uuid.uuid4().hex[:8]}"
    with pytest.raises(NotFoundError, match=rf"{name}.*environment 'main'"):
        ketch.App.lookup(name)
    made = ketch.App.lookup(name, create_if_missing=True)
    try:
        assert made.name == name and made.app_id and made.app_id.startswith("ap-")
        assert run_sync(ketch.App.lookup.aio(name)).app_id == made.app_id  # found now
        # A deploy of that name updates the app lookup made, and lookup then sees its
        # functions, reachable by name.
        fnapi_app.app.deploy(name=name)
        assert fnapi_app.app.app_id == made.app_id
        again = ketch.App.lookup(name)
        assert again.app_id == made.app_id and "info" in again._function_ids
        assert ketch.Function.from_name(name, "info").remote()["secret"] is None
    finally:
        _api("POST", f"/v1/apps/{name}/stop")
    with pytest.raises(NotFoundError):
        ketch.App.lookup(name)  # stopped


@pytest.mark.spec("A6")
def test_with_options_runs_a_plain_function_in_a_pool_of_its_own(server: object) -> None:
    with fnapi_app.app.run(show_logs=False):
        plain = fnapi_app.info.remote()
        custom = fnapi_app.info.with_options(
            secrets=[ketch.Secret.from_dict({"FNAPI_SECRET": "yes"})], timeout=2
        )
        seen = custom.remote()
        assert seen["who"] != plain["who"]  # another container, of another pool
        assert seen["secret"] == "yes"
        with pytest.raises(FunctionTimeoutError):
            fnapi_app.span.with_options(timeout=2).remote(5)
        # The original handle is unchanged: its own container, no secret, its own timeout.
        assert fnapi_app.info.remote() == plain
        assert fnapi_app.span.remote(2.5)[0]


@pytest.mark.spec("A6", "S3", "S5")
def test_with_concurrency_and_with_batching_on_plain_functions(server: object) -> None:
    with fnapi_app.app.run(show_logs=False):
        # max_containers=1: one input at a time, unless the handle raises concurrency.
        wide = fnapi_app.span.with_concurrency(max_inputs=4)
        with ThreadPoolExecutor(4) as pool:
            spans = list(pool.map(lambda _: wide.remote(1.0), range(4)))
        assert len({who for who, _, _ in spans}) == 1
        assert max(s for _, s, _ in spans) < min(e for _, _, e in spans)  # all at once
        assert fnapi_app.size.remote(1) == -1
        batched = fnapi_app.size.with_batching(max_batch_size=4, wait_ms=1000)
        with ThreadPoolExecutor(8) as pool:
            sizes = [int(cast("int", s)) for s in pool.map(batched.remote, range(8))]
        assert all(1 <= s <= 4 for s in sizes) and max(sizes) > 1


def test_update_autoscaler_starts_a_container_without_a_redeploy(deployed_name: str) -> None:
    name = deployed_name
    fn = ketch.Function.from_name(name, "warm")
    version = _live_version(name)
    assert fn.get_current_stats().num_total_runners == 0
    fn.update_autoscaler(min_containers=1, scaledown_window=30)
    _until("the warm container", lambda: fn.get_current_stats().num_total_runners == 1)
    assert _live_version(name) == version  # no new version: changed live
    status = _api("GET", f"/v1/apps/{name}/status")["functions"]["warm"]
    assert status["min_containers"] == 1
    # Refused changes change nothing; the server checks them against the current values.
    fn.update_autoscaler(max_containers=2)
    with pytest.raises(InvalidError, match="max_containers"):
        fn.update_autoscaler(min_containers=3)
    with pytest.raises(InvalidError, match="min_containers"):
        fn.update_autoscaler(min_containers=-1)
    assert _api("GET", f"/v1/apps/{name}/status")["functions"]["warm"]["min_containers"] == 1
    # The deprecated alias, on the deployed app's own handle.
    with pytest.warns(DeprecationWarning, match="update_autoscaler"):
        fnapi_app.warm.keep_warm(2)
    _until("two warm containers", lambda: fn.get_current_stats().num_total_runners == 2)
    # A class's, through an instance, as on Modal.
    ketch.Cls.from_name(name, "Warmed")().update_autoscaler(min_containers=1)

    def class_warm() -> bool:
        info = _api("GET", f"/v1/apps/{name}/status")["functions"]["Warmed"]
        return info["min_containers"] == 1 and sum(info["containers"].values()) == 1

    _until("the class's warm container", class_warm)
    assert _live_version(name) == version


def test_autoscaler_settings_outlive_a_restart_until_the_next_deploy(
    fresh_server: Any,
) -> None:
    name = f"fnapi-{uuid.uuid4().hex[:8]}"
    fnapi_app.app.deploy(name=name)
    empty = ketch.App.lookup(f"{name}-empty", create_if_missing=True)
    fn = ketch.Function.from_name(name, "warm")
    fn.update_autoscaler(min_containers=1)
    _until("the warm container", lambda: fn.get_current_stats().num_total_runners == 1)
    fresh_server.stop()
    fresh_server.start()
    status = _api("GET", f"/v1/apps/{name}/status")["functions"]["warm"]
    assert status["min_containers"] == 1
    _until("the warm container again", lambda: fn.get_current_stats().num_total_runners == 1)
    assert ketch.App.lookup(f"{name}-empty").app_id == empty.app_id  # came back too
    fnapi_app.app.deploy(name=name)  # a deploy resets them to the decorator's
    assert _api("GET", f"/v1/apps/{name}/status")["functions"]["warm"]["min_containers"] == 0


def test_current_stats_show_the_backlog(server: object, tmp_path: Path) -> None:
    gate = tmp_path / "open"
    with fnapi_app.app.run(show_logs=False):
        calls = [fnapi_app.hold.spawn(str(gate)) for _ in range(4)]

        def three_waiting() -> bool:
            stats = fnapi_app.hold.get_current_stats()
            return stats.backlog == 3 and stats.num_total_runners == 1

        _until("three inputs behind the first", three_waiting)
        gate.touch()
        assert len({c.get(timeout=60) for c in calls}) == 1  # max_containers=1
        assert fnapi_app.hold.get_current_stats().backlog == 0
