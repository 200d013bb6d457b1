"""The apps that bench/scaling_bench.py measures (kept apart from the driver so that a ketch
container imports only this small module).

- `burst_app`: one FastAPI endpoint scaled to zero, 10 requests per container at once.
- `idle_app`: 200 web endpoints that never get a request (what an idle deployment costs).
- `warm_app`: the hello endpoint kept warm with `min_containers` (what an idle warm
  container costs).
"""

from __future__ import annotations

import asyncio
from typing import Any

import ketch

burst_app = ketch.App("bench-burst")


@burst_app.function(scaledown_window=2)
@ketch.concurrent(max_inputs=10)
@ketch.fastapi_endpoint(label="bench-burst")
async def burst() -> dict[str, str]:
    await asyncio.sleep(0.01)  # a handler that waits a little, as real ones do
    return {"hello": "world"}


async def ray_handler() -> dict[str, str]:
    """The same handler, for Ray Serve."""
    await asyncio.sleep(0.01)
    return {"hello": "world"}


def make_fastapi_app() -> Any:
    from fastapi import FastAPI

    api = FastAPI()
    api.get("/")(ray_handler)
    return api


idle_app = ketch.App("bench-idle")
IDLE_ENDPOINTS = 200


def _idle_endpoint(i: int) -> Any:
    def handler() -> dict[str, int]:
        return {"i": i}

    # A module-level name, so that a container could import it like any other function.
    handler.__name__ = handler.__qualname__ = f"idle_{i}"
    return handler


for _i in range(IDLE_ENDPOINTS):
    globals()[f"idle_{_i}"] = idle_app.function(name=f"idle_{_i}")(
        ketch.fastapi_endpoint()(_idle_endpoint(_i))
    )


warm_app = ketch.App("bench-warm")
WARM_CONTAINERS = 4


@warm_app.function(
    min_containers=WARM_CONTAINERS, max_containers=WARM_CONTAINERS, scaledown_window=600
)
@ketch.fastapi_endpoint()
async def warm() -> dict[str, str]:
    return {"hello": "world"}
