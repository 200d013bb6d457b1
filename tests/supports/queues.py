"""Functions held at a gate (a file that the test creates), so that their queues fill up."""

import os
import time

import ketch

app = ketch.App("queues")


def _wait_for(gate: str) -> None:
    deadline = time.monotonic() + 120
    while not os.path.exists(gate) and time.monotonic() < deadline:
        time.sleep(0.02)


@app.function(max_containers=1)
def held(gate: str, i: int) -> int:
    _wait_for(gate)
    return i


@app.function()
def quick() -> str:
    return "quick"


@app.function(max_containers=1)
@ketch.fastapi_endpoint()
def held_web(gate: str, i: int) -> dict[str, int]:
    _wait_for(gate)
    return {"i": i}
