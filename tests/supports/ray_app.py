"""An app the Ray backend tests run on a two-node cluster: each result names the container
that made it, so that a test can tell by `ketch container list` which node ran it."""

import os
import time

import ketch

app = ketch.App("ray-app")


def _me() -> str:
    return os.environ["KETCH_CONTAINER_ID"]


@app.function(cpu=0.1)
def square(x: int) -> tuple[str, int]:
    return _me(), x * x


@app.function(cpu=0.1)
def calls_home() -> str:
    """Where this container reached the server."""
    return os.environ["KETCH_CALL_ADDR"]


# Two containers from the start, on two nodes (the backend spreads a pool's containers),
# and never more: each node of the test cluster has one CPU, which all of these share.
@app.function(cpu=0.25, min_containers=2, max_containers=2)
def spread(x: int) -> tuple[str, int]:
    time.sleep(0.002)  # long enough that one container cannot take every input alone
    return _me(), x + 1


@app.cls(cpu=0.1)
class Scaler:
    factor: int = ketch.parameter(default=2)

    @ketch.method()
    def scale(self, x: int) -> tuple[str, int]:
        return _me(), x * self.factor


@app.function(cpu=0.25, min_containers=2, max_containers=2)
def slow(x: int) -> tuple[str, int]:
    time.sleep(0.05)
    return _me(), x


# More CPUs than any node of the test cluster has: Ray cannot place its container.
@app.function(cpu=8.0, startup_timeout=600)
def too_big() -> str:
    return "never"
