"""Functions with cpu= and memory= limits (S8)."""

import os
from pathlib import Path

import ketch

app = ketch.App("limited")


@app.function(memory=128)
def hog(mb: int) -> int:
    # Written, not just reserved, so that the pages really count against the limit.
    block = b"\x01" * (mb * 2**20)
    return len(block) // 2**20


@app.function(cpu=0.5, memory=(64, 256))
def my_limits() -> dict[str, str]:
    """The cgroup limits this container finds for itself (cgroup v1 layout)."""
    out = {}
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        for ctrl, name in (("cpu", "cpu.cfs_quota_us"), ("memory", "memory.limit_in_bytes")):
            if ctrl in controllers.split(","):
                f = Path(f"/sys/fs/cgroup/{ctrl}{path}/{name}")
                if f.exists():
                    out[name] = f.read_text().strip()
    out["pid"] = str(os.getpid())
    return out
