"""The ketch apps that bench/core.py measures. Kept apart from the driver so that a container
imports only this small module (the source archive ships this file, not core.py).

Each measurement gets its own app, so that a run deploys (and keeps warm) only what it needs.
"""

from __future__ import annotations

import os
import time

import ketch

# When this module was imported: in a container, the moment the runtime had loaded the
# user's code (cold-start breakdown; see bench/core.py).
IMPORTED_AT = time.time()

# 1. warm round trip: one warm container, sequential calls.
rt_app = ketch.App("bench-roundtrip")


@rt_app.function(min_containers=1, max_containers=1, scaledown_window=600)
def rt_echo(x: int) -> int:
    return x


# 2. map throughput: exactly two warm containers.
map_app = ketch.App("bench-map")


@map_app.function(min_containers=2, max_containers=2, scaledown_window=600)
def map_echo(x: int) -> int:
    return x


# 3. cold start: no container kept; scale to zero one second after the last input.
# BENCH_COLD_IMAGE=rootfs runs it on a root-filesystem image (Debian layers under an
# overlay) instead of the default venv image, for bench/versus.py's sandbox comparison.
_ROOTFS = os.environ.get("BENCH_COLD_IMAGE") == "rootfs"
cold_app = ketch.App(
    "bench-cold",
    image=ketch.Image.debian_slim().run_commands("true") if _ROOTFS else None,
)


@cold_app.function(scaledown_window=1)
def cold_probe(x: int) -> tuple[int, dict[str, float]]:
    """Returns its argument, plus wall-clock stamps that split the cold start in phases."""
    return x, {"process_start": _process_start(), "imported": IMPORTED_AT, "called": time.time()}


def _process_start() -> float:
    """This process's start as a wall-clock time (10 ms resolution: kernel clock ticks)."""
    try:
        with open(f"/proc/{os.getpid()}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        start_ticks = int(fields[19])  # field 22 of stat(5), counted after "pid (comm)"
        age = time.clock_gettime(time.CLOCK_BOOTTIME) - start_ticks / os.sysconf("SC_CLK_TCK")
        return time.time() - age
    except (OSError, ValueError, IndexError):
        return float("nan")
