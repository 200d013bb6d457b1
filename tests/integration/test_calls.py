"""Single calls: `.remote` (B1), `.local` (B2), generators (B5), direct calls refused (A5)."""

from __future__ import annotations

import gc
import os
import time
from collections.abc import Iterator

import pytest

from ketch._client.client import Client
from ketch.exception import InvalidError
from supports import ident
from supports.calls import (
    Point,
    app,
    apply,
    async_describe,
    async_pause_gen,
    count_to,
    describe,
    echo_bytes,
    move,
    pause_gen,
    sleep_for,
)


@pytest.fixture(scope="module")
def running(ketch_server: object) -> Iterator[None]:
    with app.run(show_logs=False):
        yield


@pytest.mark.spec("A5")
def test_calling_a_function_directly_names_remote_and_local() -> None:
    with pytest.raises(InvalidError) as info:
        describe(1, 2)
    assert ".remote(" in str(info.value)
    assert ".local(" in str(info.value)


@pytest.mark.spec("B1")
def test_remote_sync_and_async_with_cloudpickled_values(server: object, running: None) -> None:
    out = describe.remote(1, "two", [3.0], key={"nested": (4, None)})
    assert out["args"] == (1, "two", [3.0])
    assert out["kwargs"] == {"key": {"nested": (4, None)}}
    assert out["pid"] != ident.me()

    aout = async_describe.remote(b"raw", flag=True)
    assert aout["args"] == (b"raw",) and aout["kwargs"] == {"flag": True}
    assert aout["async"] is True and aout["pid"] != ident.me()

    # A lambda cannot be pickled by plain pickle: it only travels because of cloudpickle.
    offset = 17
    assert apply.remote(lambda v: v * 2 + offset, 4) == 25
    # A user class defined in the app module comes back as that class.
    moved = move.remote(Point(1, 2), dx=5)
    assert type(moved) is Point and moved == Point(6, 2)


@pytest.mark.spec("B1")
@pytest.mark.timeout(240)
def test_remote_round_trips_a_256_mib_payload(server: object, running: None) -> None:
    size = 256 * 1024 * 1024
    data = os.urandom(1024 * 1024) * 256
    assert len(data) == size
    back = echo_bytes.remote(data)
    assert len(back) == size
    assert back == data


@pytest.mark.spec("B1")
def test_running_app_survives_a_client_reset(server: object) -> None:
    import supports.basic as basic

    with basic.app.run(show_logs=False):
        assert basic.square.remote(3) == 9
        # The client that leased the app is no longer current; if it were collected, its
        # connection would close and the server would stop the app under our feet.
        Client.reset()
        gc.collect()
        time.sleep(0.3)
        assert basic.square.remote(4) == 16


@pytest.mark.spec("B2")
def test_local_runs_in_this_process() -> None:
    out = describe.local(5, k="v")
    assert out == {"args": (5,), "kwargs": {"k": "v"}, "pid": ident.me()}
    assert list(count_to.local(3)) == [0, 1, 2]


@pytest.mark.spec("B5")
@pytest.mark.parametrize("gen", [pause_gen, async_pause_gen], ids=["sync", "async"])
def test_remote_gen_yields_items_as_they_are_produced(
    server: object, running: None, gen: object
) -> None:
    assert list(gen.remote_gen(0.0)) == ["first", "second"]  # type: ignore[attr-defined]
    start = time.monotonic()
    items = gen.remote_gen(3.0)  # type: ignore[attr-defined]
    first = next(items)
    first_at = time.monotonic() - start
    rest = list(items)
    total = time.monotonic() - start
    assert (first, rest) == ("first", ["second"])
    assert total >= 3.0
    # The first item must not wait for the generator's 3 s pause to end.
    assert first_at < total - 2.0, (first_at, total)


@pytest.mark.spec("B5")
def test_generator_functions_need_remote_gen(server: object, running: None) -> None:
    assert list(count_to.remote_gen(4)) == [0, 1, 2, 3]
    with pytest.raises(InvalidError, match="remote_gen"):
        count_to.remote(3)
    with pytest.raises(InvalidError, match="remote_gen"):
        count_to.spawn(3)
    with pytest.raises(InvalidError, match="remote_gen"):
        list(count_to.map([1, 2]))
    with pytest.raises(InvalidError, match="remote_gen"):
        list(count_to.starmap([(1,)]))
    with pytest.raises(InvalidError, match=r"\.remote\(\)"):
        list(sleep_for.remote_gen(0))


@pytest.mark.spec("B5")
def test_closing_remote_gen_early_stops_the_remote_generator(server: object, tmp_path) -> None:  # type: ignore[no-untyped-def]
    import time

    from supports.calls import app as calls_app
    from supports.calls import endless_gen

    trace = tmp_path / "items"
    with calls_app.run(show_logs=False):
        gen = endless_gen.remote_gen(str(trace))
        assert [next(gen) for _ in range(3)] == [0, 1, 2]
        gen.close()
        time.sleep(1.0)
        produced = len(trace.read_text().split())
        time.sleep(1.0)
        # Nothing more is produced once the caller has let go.
        assert len(trace.read_text().split()) == produced
