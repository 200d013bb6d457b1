"""An app module that cannot be imported inside a container."""

import os

import ketch

app = ketch.App("broken-import")

if os.environ.get("KETCH_CONTAINER_ID"):
    import a_module_that_does_not_exist_anywhere  # noqa: F401


@app.function()
def f() -> int:
    return 1
