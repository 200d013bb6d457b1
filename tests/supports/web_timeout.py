"""A web handler that runs past its function's timeout."""

import time

import ketch

app = ketch.App("web-timeout")


@app.function(timeout=2)
@ketch.fastapi_endpoint()
def slow(seconds: float) -> dict[str, str]:
    time.sleep(seconds)
    return {"done": "yes"}
