"""The app bench/dashboard_bench.py deploys 200 times under different names: a web endpoint
and two plain functions (nothing runs: only the pages that list them are timed)."""

import ketch

app = ketch.App("dash-bench")


@app.function()
@ketch.fastapi_endpoint()
def page(q: str = "") -> str:
    return q


@app.function()
def square(x: int) -> int:
    return x * x


@app.function()
def cube(x: int) -> int:
    return x * x * x
