"""A module that takes longer to import in a container than its startup_timeout allows
(tests/integration/test_fork_server.py)."""

from __future__ import annotations

import os
import time

import ketch

app = ketch.App("fork-server-slow")

if os.environ.get("KETCH_CONTAINER_ID"):
    time.sleep(20)


@app.function(startup_timeout=2)
def f() -> int:
    return 1
