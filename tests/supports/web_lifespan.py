"""An ASGI app whose lifespan events are recorded to a file per container (W2).

Only ketch and the standard library at the top; FastAPI is imported where the app is built.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import ketch
from supports.shared_tmp import shared_tmp

app = ketch.App("ketch-web-lifespan")


def lifespan_log(cid: str) -> Path:
    """Where a container of `lifespan_app` records its lifespan events: in the directory
    the tests share with sandboxed containers (their /tmp is their own), by container id
    (a sandboxed container's pid is one of its own pid namespace)."""
    return shared_tmp() / f"ketch-test-lifespan-{cid}.log"


@app.function(max_containers=1)
@ketch.concurrent(max_inputs=8)
@ketch.asgi_app()
def lifespan_app() -> Any:
    from contextlib import asynccontextmanager

    from fastapi import FastAPI

    log = lifespan_log(os.environ["KETCH_CONTAINER_ID"])

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> Any:
        with log.open("a") as fh:
            fh.write("startup\n")
        yield
        with log.open("a") as fh:
            fh.write("shutdown\n")

    web_app = FastAPI(lifespan=lifespan)

    @web_app.get("/")
    async def root() -> dict[str, Any]:
        return {"pid": os.getpid(), "cid": os.environ["KETCH_CONTAINER_ID"], "log": str(log)}

    @web_app.post("/echo")
    async def echo(body: dict[str, Any]) -> dict[str, Any]:
        return body

    return web_app
