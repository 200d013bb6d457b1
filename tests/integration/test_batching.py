"""@batched (S5): concurrent callers are grouped into lists, and each gets its own answer."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

import ketch
from ketch.exception import InvalidError
from supports import batching


def _concurrently(fn: Any, args: list[tuple[Any, ...]]) -> list[Any]:
    with ThreadPoolExecutor(len(args)) as pool:
        return list(pool.map(lambda a: fn(*a), args))


@pytest.mark.spec("S5")
def test_twenty_callers_each_get_their_own_answer_from_batches(server: object) -> None:
    with batching.app.run(show_logs=False):
        out = _concurrently(batching.double.remote, [(i,) for i in range(20)])
        assert [value for value, _ in out] == [i * 2 for i in range(20)]
        sizes = [size for _, size in out]
        assert max(sizes) > 1 and max(sizes) <= 8
        # Two parameters, async: one list per parameter, zipped back per caller.
        out = _concurrently(batching.add.remote, [(i, 100 * i) for i in range(20)])
        assert [value for value, _ in out] == [101 * i for i in range(20)]
        assert max(size for _, size in out) > 1


@pytest.mark.spec("S5")
def test_a_lone_call_runs_after_wait_ms_in_a_batch_of_one(server: object) -> None:
    with batching.app.run(show_logs=False):
        assert batching.double.remote(21) == (42, 1)
        assert batching.double.remote(xs=5) == (10, 1)  # by keyword too


@pytest.mark.spec("S5")
def test_batched_class_methods_sync_and_async(server: object) -> None:
    with batching.app.run(show_logs=False):
        scaler = batching.Scaler(factor=4)
        out = _concurrently(scaler.scale.remote, [(i,) for i in range(12)])
        assert [value for value, _ in out] == [4 * i for i in range(12)]
        assert max(size for _, size in out) > 1
        out = _concurrently(batching.AsyncScaler().scale.remote, [(i,) for i in range(12)])
        assert [value for value, _ in out] == [10 * i for i in range(12)]
        assert max(size for _, size in out) > 1


@pytest.mark.spec("S5")
def test_a_result_list_of_the_wrong_length_fails_every_caller_clearly(server: object) -> None:
    with batching.app.run(show_logs=False):

        def call(i: int) -> BaseException | None:
            try:
                batching.short.remote(i)
            except Exception as exc:
                return exc
            return None

        errors = _concurrently(call, [(i,) for i in range(4)])
        assert all(isinstance(e, InvalidError) for e in errors), errors
        assert all("one result per input" in str(e) for e in errors)


@pytest.mark.spec("S5")
def test_an_exception_in_the_batch_reaches_each_caller(server: object) -> None:
    with batching.app.run(show_logs=False):
        with pytest.raises(ValueError, match="batch of 1 refused"):
            batching.fails.remote(1)
        # Arguments that do not fit the signature fail that caller only.
        with pytest.raises(TypeError):
            batching.double.remote(1, 2)


@pytest.mark.spec("S5")
def test_batched_misuse_is_refused_at_decoration() -> None:
    app = ketch.App("batched-misuse")
    with pytest.raises(InvalidError, match="concurrent"):

        @app.function(serialized=True)
        @ketch.concurrent(max_inputs=4)
        @ketch.batched(max_batch_size=4, wait_ms=10)
        def both(xs: list[int]) -> list[int]:
            return xs

    with pytest.raises(InvalidError, match="no other"):

        @app.cls(serialized=True)
        class Mixed:
            @ketch.batched(max_batch_size=4, wait_ms=10)
            def a(self, xs: list[int]) -> list[int]:
                return xs

            @ketch.method()
            def b(self) -> int:
                return 1
