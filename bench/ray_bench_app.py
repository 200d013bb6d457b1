"""Functions bench/ray_backend.py times on the local and the Ray backend alike."""

import ketch

app = ketch.App("ray-bench")


@app.function(cpu=0.1)
def echo(x: int) -> int:
    return x


# Two warm containers from the start (on two nodes under Ray: the backend spreads a pool).
@app.function(cpu=0.25, min_containers=2, max_containers=2)
def inc(x: int) -> int:
    return x + 1
