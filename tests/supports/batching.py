"""@batched functions and @batched class methods (S5): each result carries the size of the
batch it was computed in, so tests see that batches really formed."""

import asyncio

import ketch

app = ketch.App("batching")


@app.function()
@ketch.batched(max_batch_size=8, wait_ms=500)
def double(xs: list[int]) -> list[tuple[int, int]]:
    return [(x * 2, len(xs)) for x in xs]


@app.function()
@ketch.batched(max_batch_size=8, wait_ms=500)
async def add(xs: list[int], ys: list[int]) -> list[tuple[int, int]]:
    await asyncio.sleep(0)
    return [(x + y, len(xs)) for x, y in zip(xs, ys, strict=True)]


@app.function()
@ketch.batched(max_batch_size=4, wait_ms=300)
def short(xs: list[int]) -> list[int]:
    return xs[:-1]  # one result too few: every caller must get a clear error


@app.function()
@ketch.batched(max_batch_size=4, wait_ms=300)
def fails(xs: list[int]) -> list[int]:
    raise ValueError(f"batch of {len(xs)} refused")


@app.cls()
class Scaler:
    factor: int = ketch.parameter(default=3)

    @ketch.batched(max_batch_size=8, wait_ms=500)
    def scale(self, xs: list[int]) -> list[tuple[int, int]]:
        return [(x * self.factor, len(xs)) for x in xs]


@app.cls()
class AsyncScaler:
    @ketch.batched(max_batch_size=8, wait_ms=500)
    async def scale(self, xs: list[int]) -> list[tuple[int, int]]:
        await asyncio.sleep(0)
        return [(x * 10, len(xs)) for x in xs]
