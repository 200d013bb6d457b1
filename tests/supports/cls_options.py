"""Classes whose handles take other options per call site (A6: with_options,
with_concurrency, with_batching)."""

import os
import time
from pathlib import Path

import ketch
from supports import ident

app = ketch.App("cls-options")


def _memory_limit() -> str | None:
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if "memory" in controllers.split(","):
            f = Path(f"/sys/fs/cgroup/memory{path}/memory.limit_in_bytes")
            return f.read_text().strip() if f.exists() else None
    return None


@app.cls(max_containers=1)
class Probe:
    @ketch.method()
    def info(self) -> dict[str, object]:
        return {
            "pid": ident.me(),  # by `supports.ident`: a sandboxed pid is not unique
            "secret": os.environ.get("OPT_SECRET"),
            "memory_limit": _memory_limit(),
        }

    @ketch.method()
    def span(self, seconds: float) -> tuple[str, float, float]:
        start = time.time()
        time.sleep(seconds)
        return ident.me(), start, time.time()


@app.cls()
class Sizer:
    @ketch.method()
    def size(self, x: object) -> object:
        # Batched, `x` is the list of the batch; plain, it is one value.
        if isinstance(x, list):
            return [len(x)] * len(x)
        return -1
