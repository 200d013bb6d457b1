"""Typed uses of ketch's public handles: mypy must find nothing wrong here
(tests/unit/test_typing.py). The file is only type-checked, never run."""

from __future__ import annotations

from collections.abc import Iterator

import ketch

app = ketch.App("typed")


@app.function(timeout=60, retries=2, min_containers=0, gpu=None)
def square(x: int, *, scale: float = 1.0) -> float:
    return x * x * scale


@app.function()
async def shout(text: str) -> str:
    return text.upper()


@app.function()
def count(n: int) -> Iterator[int]:
    yield from range(n)


@app.cls(timeout=30)
class Model:
    @ketch.method()
    def predict(self, prompt: str, temperature: float = 0.5) -> list[str]:
        return [prompt] * int(temperature * 10)

    @ketch.method()
    async def embed(self, text: str) -> list[float]:
        return [float(len(text))]


def uses() -> None:
    a: float = square.remote(3, scale=2.0)
    b: float = square.local(3)
    call: ketch.FunctionCall[float] = square.spawn(4)
    c: float = call.get(timeout=5)
    d: str = shout.remote("hi")
    squares: list[float] = list(square.map(range(10)))
    items: list[int] = list(count.remote_gen(3))
    words: list[str] = Model().predict.remote("p", temperature=0.1)
    vec: list[float] = Model().embed.remote("t")
    d2 = ketch.Dict.from_name("d", create_if_missing=True)
    d2.put("k", 1)
    print(a, b, c, d, squares, items, words, vec)


async def async_uses() -> None:
    a: float = await square.remote.aio(3)
    call = await square.spawn.aio(2)
    b: float = await call.get.aio()
    words: list[str] = await Model().predict.remote.aio("p")
    print(a, b, words)


@app.function()
@ketch.concurrent(max_inputs=4)
async def fetch(url: str) -> bytes:
    return url.encode()


def concurrent_uses() -> None:
    body: bytes = fetch.remote("http://127.0.0.1/")
    print(body)
