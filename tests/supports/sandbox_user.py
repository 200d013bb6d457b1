"""A function that makes a Sandbox from inside its own container, with its container's
credential (tests/integration/test_sandboxes.py)."""

from __future__ import annotations

import ketch

app = ketch.App("sandbox-user")


@app.function()
def run_in_sandbox(text: str) -> str:
    sb = ketch.Sandbox.create()  # inside a container: the container's own app
    try:
        return str(sb.exec("sh", "-c", text).stdout.read())
    finally:
        sb.terminate()
