"""A web endpoint and a plain function for the metrics tests (O2)."""

import ketch

app = ketch.App("ketch-ops-web")


@app.function()
@ketch.fastapi_endpoint()
def ping(n: int = 0) -> dict[str, int]:
    return {"pong": n}


@app.function()
def triple(x: int) -> int:
    return 3 * x
