"""Functions for the kill tests (tests/integration/test_chaos.py).

Every run appends a `start` and an `end` line to a journal file. Each line is one
`write(2)` on a descriptor opened with O_APPEND, so lines of concurrent runs and containers
never interleave, and a line is on disk as soon as it is written, whatever kills the
process afterwards. Processes are named by `supports.ident` (pid namespace and pid), which a
sandboxed container's bare pid is not.
"""

import asyncio
import os
import time

import ketch
from supports import ident

app = ketch.App("chaos")


def _note(journal: str, line: str) -> None:
    fd = os.open(journal, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


# One container with room for many inputs: everything in flight is in one known process.
@app.function(max_containers=1)
@ketch.concurrent(max_inputs=100)
async def work(
    journal: str, gate: str, i: int, free_below: int = 0, seconds: float = 0.0
) -> tuple[int, str]:
    """Inputs numbered below `free_below` finish after `seconds`; the others wait until the
    file `gate` exists. Returns a value derived from `i`, and the process that ran it."""
    _note(journal, f"start {i} {ident.me()}")
    if i >= free_below:
        while not os.path.exists(gate):
            await asyncio.sleep(0.02)
    await asyncio.sleep(seconds)
    _note(journal, f"end {i} {ident.me()}")
    return 3 * i, ident.me()


@app.cls(max_containers=1)
class SlowStart:
    """Its containers take until the file `gate` exists to start (in an @enter hook); each
    leaves the file `entered` once its process runs the hook."""

    gate: str = ketch.parameter()
    entered: str = ketch.parameter()

    @ketch.enter()
    def wait_for_gate(self) -> None:
        _note(self.entered, f"entered 0 {ident.me()}")
        while not os.path.exists(self.gate):
            time.sleep(0.02)

    @ketch.method()
    def pid(self) -> str:
        return ident.me()
