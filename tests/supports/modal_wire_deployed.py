"""A Modal app deployed with `modal deploy` in tests/integration/test_modal_wire.py (copied
into the test's directory first). VERSION is rewritten by the test to tell deploys apart."""

import modal

app = modal.App("wire-deployed")
VERSION = "v1"


@app.function()
def greet(name: str) -> str:
    return f"hello {name} {VERSION}"


@app.function()
def wait_for(path: str) -> str:
    """Returns once `path` exists (a file the test creates in a shared directory)."""
    import os
    import time

    while not os.path.exists(path):
        time.sleep(0.05)
    with open(path) as fh:
        return "released " + fh.read()
