"""Where test apps leave files for the test to read: the directory the tests share with
sandboxed containers (KETCH_SANDBOX_SHARE, the session's pytest directory), since a
sandboxed container's /tmp is its own. The system's temporary directory when unshared."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def shared_tmp() -> Path:
    shared = os.environ.get("KETCH_SANDBOX_SHARE", "").split(":")[0]
    return Path(shared or tempfile.gettempdir())
