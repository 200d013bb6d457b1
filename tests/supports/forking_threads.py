"""A module whose import starts a thread: forking after that is unsafe, so its containers
must start as plain processes (tests/integration/test_fork_server.py)."""

from __future__ import annotations

import threading
import time
from typing import Any

import ketch
from supports import ident

app = ketch.App("fork-server-threads")

_ticker = threading.Thread(target=lambda: time.sleep(3600), name="import-ticker", daemon=True)
_ticker.start()


@app.function()
def me() -> dict[str, Any]:
    return {"pid": ident.me(), "ppid": ident.parent()}
