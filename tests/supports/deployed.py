"""An app the tests deploy, then reach by name from other processes."""

import asyncio
from collections.abc import Iterator
from typing import Any

import ketch
from supports import ident

app = ketch.App("ketch-deployed-calls")


@app.function(max_containers=1)
@ketch.concurrent(max_inputs=10)
async def slow_double(x: int, seconds: float = 0.0) -> int:
    await asyncio.sleep(seconds)
    if x < 0:
        raise ValueError(f"negative input {x}")
    return 2 * x


@app.function(max_containers=1)
@ketch.concurrent(max_inputs=10)
async def stall(seconds: float, marker: str = "") -> str:
    await asyncio.sleep(seconds)
    if marker:
        with open(marker, "w") as fh:
            fh.write("finished")
    return "finished"


@app.cls(max_containers=2)
class Greeter:
    greeting: str = ketch.parameter(default="hello")

    @ketch.enter()
    def start(self) -> None:
        self.pid = ident.me()  # by `supports.ident`: a sandboxed pid is not unique

    @ketch.method()
    def greet(self, who: str) -> dict[str, Any]:
        return {"text": f"{self.greeting}, {who}", "pid": self.pid}

    @ketch.method()
    def letters(self, who: str) -> Iterator[str]:
        yield from who
