"""The container side of bench/volume_bench.py: read a file from a mounted volume."""

import os
import time

import ketch

MOUNT = "/tmp/ketch-volume-bench/data"
CHUNK = 2**20

app = ketch.App("volume-bench")
vol = ketch.Volume.from_name("bench-files", create_if_missing=True)


def read_all(path: str) -> tuple[int, float]:
    """Bytes read and seconds taken, reading in 1 MiB chunks into one reused buffer."""
    buf = bytearray(CHUNK)
    view = memoryview(buf)
    total = 0
    t0 = time.perf_counter()
    fd = os.open(path, os.O_RDONLY)
    try:
        while n := os.readv(fd, [view]):
            total += n
    finally:
        os.close(fd)
    return total, time.perf_counter() - t0


@app.function(volumes={MOUNT: vol}, timeout=600)
def read_in_container(name: str) -> tuple[int, float]:
    return read_all(os.path.join(MOUNT, name))
