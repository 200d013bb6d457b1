"""Wrong uses of ketch's handles, each on a line whose comment says `error:`: mypy must report
exactly those lines (tests/unit/test_typing.py). Only type-checked, never run."""

from __future__ import annotations

import ketch

app = ketch.App("typed-errors")


@app.function(timout=5)  # error: a typo in an option
def typo() -> None:
    pass


@app.function(timeout=5)
def square(x: int) -> float:
    return float(x * x)


@app.cls()
class Model:
    @ketch.method()
    def predict(self, prompt: str) -> list[str]:
        return [prompt]


def wrong() -> None:
    square.remote("three")  # error: a str for an int
    square.remote(1, 2)  # error: too many arguments
    text: str = square.remote(3)  # error: it returns a float
    square.local(x="3")  # error: local keeps the signature too
    Model().predict.remote(7)  # error: a method's argument
    n: int = Model().predict.remote("p")  # error: a method's result
    square.spawn("x")  # error: spawn keeps the signature
    print(text, n)


async def wrong_async() -> None:
    await square.remote.aio("three")  # error: .aio keeps the signature


@app.function()
@ketch.concurrent(max_inputs=4)
def fetch(url: str) -> bytes:
    return url.encode()


def wrong_concurrent() -> None:
    fetch.remote(3)  # error: @concurrent below keeps the signature
