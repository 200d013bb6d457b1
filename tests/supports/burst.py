"""A web endpoint scaled to zero, 10 requests per container, at most 8 containers, and a
short scale-down window (the burst test of S1 to S3)."""

import asyncio

import ketch
from supports import ident

app = ketch.App("burst")


@app.function(max_containers=8, scaledown_window=2)
@ketch.concurrent(max_inputs=10)
@ketch.fastapi_endpoint()
async def hello(i: int = 0) -> dict[str, int | str]:
    await asyncio.sleep(0.05)
    return {"i": i, "pid": ident.me()}  # by `supports.ident`: a sandboxed pid is not unique
