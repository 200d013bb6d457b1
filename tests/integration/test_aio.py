"""`.aio` forms (B6): every call shape works from async code without blocking its loop."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import pytest

import supports.mapping as mapping
from ketch.exception import InvalidError
from ketch.functions import FunctionCall
from supports.calls import app, async_pause_gen, describe, pause_gen, sleep_for


@pytest.fixture(scope="module")
def running(ketch_server: object) -> Iterator[None]:
    with app.run(show_logs=False), mapping.app.run(show_logs=False):
        yield


class Ticker:
    """Counts how often the event loop gets to run it: a blocked loop stops the count."""

    def __init__(self) -> None:
        self.ticks = 0
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(0.05)
            self.ticks += 1

    def __enter__(self) -> Ticker:
        self._task = asyncio.get_running_loop().create_task(self._run())
        return self

    def __exit__(self, *exc: Any) -> None:
        assert self._task is not None
        self._task.cancel()


@pytest.mark.spec("B6")
def test_aio_forms_do_not_block_the_loop(server: object, running: None) -> None:
    async def main() -> dict[str, Any]:
        out: dict[str, Any] = {}
        with Ticker() as t:
            # Warm the container, so the timed call below is just the call.
            await sleep_for.remote.aio(0)
            before = t.ticks
            out["remote"] = await sleep_for.remote.aio(1.0)
            out["remote_ticks"] = t.ticks - before

            before = t.ticks
            out["gen"] = [x async for x in pause_gen.remote_gen.aio(1.0)]
            out["agen"] = [x async for x in async_pause_gen.remote_gen.aio(0.0)]
            out["gen_ticks"] = t.ticks - before

            call = await mapping.delayed.spawn.aio(7, 1.0)
            assert isinstance(call, FunctionCall)
            before = t.ticks
            out["get"] = await call.get.aio()
            out["get_ticks"] = t.ticks - before
            with pytest.raises(TimeoutError):
                await (await mapping.delayed.spawn.aio(1, 5.0)).get.aio(timeout=0)

            calls = [await mapping.delayed.spawn.aio(i, 0.2) for i in range(3)]
            out["gather"] = await FunctionCall.gather.aio(*calls)

            before = t.ticks
            out["map"] = [x async for x in mapping.delayed.map.aio([1, 2, 3], [1.0, 0.5, 0.0])]
            out["map_ticks"] = t.ticks - before
            out["map_unordered"] = [
                x
                async for x in mapping.delayed.map.aio(
                    [1, 2, 3], [0.6, 0.3, 0.0], order_outputs=False
                )
            ]
            out["starmap"] = [x async for x in mapping.combine.starmap.aio([(1, 2), (3, 4)])]
            # for_each gives nothing back: the None is part of what is checked.
            out["for_each"] = await mapping.delayed.for_each.aio([1, 2], [0.0, 0.0])  # type: ignore[func-returns-value]
            out["describe"] = (await describe.remote.aio(1, k=2))["args"]

            loops = set()

            async def agen(n: int) -> Any:
                for i in range(n):
                    loops.add(asyncio.get_running_loop())
                    yield i

            # An async iterable is stepped on the caller's loop (it may await objects bound
            # to it), and may be zipped with plain ones.
            out["map_async_input"] = [x async for x in mapping.delayed.map.aio(agen(3), [0.0] * 5)]
            await mapping.delayed.for_each.aio(agen(2), [0.0, 0.0])
            out["input_loops"] = loops == {asyncio.get_running_loop()}
        return out

    start = time.monotonic()
    out = asyncio.run(main())
    assert time.monotonic() - start < 60
    assert out["remote"] == "slept 1.0"
    assert out["gen"] == ["first", "second"] and out["agen"] == ["first", "second"]
    assert out["get"] == 7
    assert out["gather"] == [0, 1, 2]
    assert out["map"] == [1, 2, 3]
    assert out["map_unordered"] == [3, 2, 1]
    assert out["starmap"] == [3, 7]
    assert out["for_each"] is None
    assert out["describe"] == (1,)
    assert out["map_async_input"] == [0, 1, 2]
    assert out["input_loops"] is True
    # Each of these waited about a second; a ticker every 50 ms ran all along.
    for key in ("remote_ticks", "gen_ticks", "get_ticks", "map_ticks"):
        assert out[key] >= 5, (key, out)


@pytest.mark.spec("B6")
def test_blocking_map_inside_a_running_loop_names_the_aio_form(server: object) -> None:
    async def main() -> list[str]:
        errors = []
        for call in (
            lambda: mapping.delayed.map([1], [0.0]),
            lambda: mapping.combine.starmap([(1, 2)]),
        ):
            try:
                for _ in call():
                    pass
            except InvalidError as exc:
                errors.append(str(exc))
        return errors

    errors = asyncio.run(main())
    assert len(errors) == 2
    assert ".map.aio" in errors[0]
    assert ".starmap.aio" in errors[1]
