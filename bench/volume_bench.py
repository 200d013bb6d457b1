#!/usr/bin/env python
"""Volume read throughput: a 1 GiB file read inside a container through its mounted path,
against the same file read straight from the host disk, in the same run.

    .venv/bin/python bench/volume_bench.py [--size-mib 1024] [--rounds 2]

Both sides run the same loop (1 MiB `readv` into one buffer) and time only that loop; the
container's figure is measured inside the container, so call overhead is left out. The
page cache cannot be dropped reliably on a shared machine, so each side reads the file
`--rounds` times, alternating, and the warm figures (the page cache holding the file) are
what is compared; the first read of each side is shown too. Also shown: the SDK's upload
(`batch_upload`) and download (`read_file`) throughput through the management API.

Uses a fresh KETCH_HOME under /tmp and removes it (and the 1 GiB file) at the end.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

from core import Ketch  # noqa: E402
from volume_bench_app import app, read_all, read_in_container, vol  # noqa: E402

MIB = 2**20


def make_file(path: Path, size: int) -> None:
    block = os.urandom(MIB)
    with path.open("wb") as fh:
        for _ in range(size // MIB):
            fh.write(block)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size-mib", type=int, default=1024)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    size = args.size_mib * MIB
    k = Ketch()
    local_dir = Path(tempfile.mkdtemp(prefix="ketch-volbench-"))
    try:
        src = local_dir / "big.bin"
        make_file(src, size)
        t0 = time.perf_counter()
        with vol.batch_upload(force=True) as batch:
            batch.put_file(src, "big.bin")
        upload_s = time.perf_counter() - t0
        src.unlink()  # the copy in the volume is the one read from now on
        host_file = k.home / "volumes" / "main" / vol.object_id / "big.bin"
        assert host_file.stat().st_size == size

        host: list[float] = []
        container: list[float] = []
        with app.run(show_logs=False):
            for _ in range(args.rounds):
                n, secs = read_all(str(host_file))
                assert n == size
                host.append(secs)
                n, secs = read_in_container.remote("big.bin")
                assert n == size
                container.append(secs)
        t0 = time.perf_counter()
        got = sum(len(chunk) for chunk in vol.read_file("big.bin"))
        download_s = time.perf_counter() - t0
        assert got == size

        def rate(secs: float) -> float:
            return size / MIB / secs

        warm_host = statistics.median(host[1:] or host)
        warm_cont = statistics.median(container[1:] or container)
        print(f"file: {args.size_mib} MiB, rounds: {args.rounds}, machine: {os.cpu_count()} CPUs")
        print(f"{'read':<28}{'first MiB/s':>14}{'warm MiB/s':>14}")
        print(f"{'host disk (page cache)':<28}{rate(host[0]):>14.0f}{rate(warm_host):>14.0f}")
        print(f"{'container, mounted path':<28}{rate(container[0]):>14.0f}{rate(warm_cont):>14.0f}")
        print(f"ratio container/host (warm): {warm_host / warm_cont:.3f}")
        print(f"SDK upload (batch_upload):   {rate(upload_s):.0f} MiB/s")
        print(f"SDK download (read_file):    {rate(download_s):.0f} MiB/s")
    finally:
        shutil.rmtree(local_dir, ignore_errors=True)
        k.close()  # removes the KETCH_HOME, with the volume and its 1 GiB file
        shutil.rmtree("/tmp/ketch-volume-bench", ignore_errors=True)


if __name__ == "__main__":
    main()
