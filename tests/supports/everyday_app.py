"""Modal's everyday helpers seen from inside containers (tests/integration/test_everyday_api.py):
where code runs, which input it runs for, and the app's web URLs from a plain function.

FastAPI is imported at the top while no image lists it: as in Modal's older examples, the
plain functions' containers must find it too, since the app has endpoints.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import fastapi

import ketch

app = ketch.App("everyday")

# A bare venv on the server's Python: nothing of FastAPI but what ketch adds.
bare = ketch.Image.debian_slim()


@app.function(image=bare)
@ketch.fastapi_endpoint()
def hello() -> dict[str, str]:
    return {"hello": "web"}


@app.function(image=bare)
def sibling_url() -> str | None:
    return hello.get_web_url()


@app.function(image=bare)
def where() -> dict[str, Any]:
    return {
        "is_local": ketch.is_local(),
        "input_id": ketch.current_input_id(),
        "call_id": ketch.current_function_call_id(),
        "fastapi": fastapi.__name__,
    }


@app.function(image=bare)
async def where_async() -> dict[str, Any]:
    return {"input_id": ketch.current_input_id(), "call_id": ketch.current_function_call_id()}


@app.function(image=bare)
def ids_gen() -> Iterator[str | None]:
    yield ketch.current_input_id()
    yield ketch.current_input_id()


@app.function(image=bare)
async def ids_agen() -> AsyncIterator[str | None]:
    yield ketch.current_input_id()


@app.function(image=bare)
def try_interact() -> None:
    ketch.interact()


@app.cls(image=bare)
class Site:
    @ketch.fastapi_endpoint()
    def page(self) -> dict[str, int]:
        return {"page": 1}

    @ketch.method()
    def plain(self) -> str:
        return "plain"
