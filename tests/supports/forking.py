"""Functions whose containers are forked from a fork-server template (see
tests/integration/test_fork_server.py). Each reports what makes its process its own.

Processes are named by `supports.ident` (pid namespace and pid), not by bare pids: a
sandboxed container's pids are its namespace's, and the test translates them to host pids."""

from __future__ import annotations

import os
import random
import time
from pathlib import Path
from typing import Any

import ketch
from supports import ident

app = ketch.App("fork-server")

# Taken once, where the module is imported: in the template when containers are forked.
IMPORTED_IN = ident.me()
IMPORT_RANDOM = random.random()


def _me() -> dict[str, Any]:
    try:
        import numpy

        np_value: float | None = float(numpy.random.random())
    except ImportError:
        np_value = None
    return {
        "pid": ident.me(),
        "ppid": ident.parent(),
        "pgid": ident.of(os.getpgrp()),
        "imported_in": IMPORTED_IN,
        "import_random": IMPORT_RANDOM,
        "random": random.random(),
        "numpy_random": np_value,
        "container": os.environ.get("KETCH_CONTAINER_ID"),
    }


@app.cls(scaledown_window=60)
class Who:
    # Two parameter sets give two pools, hence two containers at once, from one template.
    n: int = ketch.parameter(default=0)

    @ketch.method()
    def me(self) -> dict[str, Any]:
        return _me()


@app.function(scaledown_window=60)
def shout(text: str) -> dict[str, Any]:
    """Prints a line (captured under this container's id) and reports who printed it."""
    print(f"shout: {text} from {os.environ.get('KETCH_CONTAINER_ID')}", flush=True)
    return _me()


@app.function(scaledown_window=60)
def killed_once(marker: str) -> dict[str, Any]:
    """The first run writes its identity and waits to be killed by the test; the re-run
    returns."""
    path = Path(marker)
    if not path.exists():
        path.write_text(ident.me())
        time.sleep(60)
    return _me()


@app.function(scaledown_window=60)
@ketch.fastapi_endpoint()
def web_me() -> dict[str, Any]:
    return _me()


@app.cls(enable_memory_snapshot=True, scaledown_window=60)
class Snap:
    counters: str = ketch.parameter()

    @ketch.enter(snap=True)
    def load(self) -> None:
        # Once per template: a memory snapshot's worth of work.
        with open(os.path.join(self.counters, "snap"), "a") as fh:
            fh.write(f"{ident.me()}\n")
        self.loaded_in = ident.me()

    @ketch.enter()
    def per_container(self) -> None:
        with open(os.path.join(self.counters, "enter"), "a") as fh:
            fh.write(f"{ident.me()}\n")

    @ketch.method()
    def hold(self, seconds: float) -> dict[str, Any]:
        time.sleep(seconds)
        return {**_me(), "loaded_in": self.loaded_in}
