"""Turning platform-side failures into the error payloads that callers unpickle."""

from __future__ import annotations

import pickle
from typing import Any


def error_payload(exc: BaseException, traceback_text: str = "") -> dict[str, Any]:
    """The same shape the runtime sends for user exceptions."""
    try:
        data: bytes | None = pickle.dumps(exc)
    except Exception:
        data = None
    return {"exc": data, "repr": repr(exc), "tb": traceback_text}
