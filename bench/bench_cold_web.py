"""The endpoint that bench/coldstart_bench.py starts from zero: one hello-world FastAPI
handler, served by a ketch endpoint and by Ray Serve (`make_fastapi_app`). Kept apart from
the driver so that a container imports only this small module."""

from __future__ import annotations

from typing import Any

import ketch

app = ketch.App("bench-coldweb")


# scaledown_window=1 (the shortest allowed): the container goes about a second after its
# request, so that every sample starts from zero containers.
@app.function(scaledown_window=1)
@ketch.fastapi_endpoint(label="bench-coldweb")
def hello() -> dict[str, str]:
    return {"hello": "world"}


def make_fastapi_app() -> Any:
    """The same handler as the only route of a FastAPI app (for Ray Serve's ingress)."""
    from fastapi import FastAPI

    api = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)
    api.add_api_route("/", hello.get_raw_f(), methods=["GET"])
    return api
