"""A web endpoint whose container cannot start: its module fails to import there (W17)."""

import os

import ketch

app = ketch.App("ketch-web-broken")

if os.environ.get("KETCH_CONTAINER_ID"):
    import a_web_module_that_does_not_exist  # noqa: F401


@app.function()
@ketch.fastapi_endpoint()
def broken() -> str:
    return "never served"
