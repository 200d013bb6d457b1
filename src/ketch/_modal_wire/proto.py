"""Loads Modal's generated protocol code (`modal_proto`) and knows the supported clients."""

from __future__ import annotations

import importlib
import os
import sys
from types import ModuleType
from typing import Any

from ketch.exception import InvalidError

# The client versions this front end is tested against (tests/integration/test_modal_wire.py
# runs each): at least the two latest minor releases. Lowest included, highest excluded.
SUPPORTED_LOW = (1, 5, 0)
SUPPORTED_HIGH = (1, 7, 0)
SUPPORTED_TEXT = "1.5.x and 1.6.x (>=1.5.0, <1.7.0)"


def load() -> tuple[ModuleType, ModuleType]:
    """`(api_pb2, api_grpc)`, from the installed `modal_proto`, or from the directory named
    by KETCH_MODAL_PROTO (one holding just `modal_proto/`, so that the server's own
    environment need not have the `modal` package itself, which would turn off ketch's
    `import modal` shim there)."""
    extra = os.environ.get("KETCH_MODAL_PROTO", "")
    if extra and extra not in sys.path:
        sys.path.append(extra)
    try:
        pb2 = importlib.import_module("modal_proto.api_pb2")
        grpc = importlib.import_module("modal_proto.api_grpc")
        importlib.import_module("grpclib")
    except ImportError as exc:
        raise InvalidError(
            "the Modal front end (--modal-wire) needs Modal's protocol code: "
            "pip install 'ketch[modal-wire]' (or set KETCH_MODAL_PROTO to a directory "
            f"holding modal_proto/): {exc}"
        ) from exc
    return pb2, grpc


def parse_version(text: str) -> tuple[int, ...] | None:
    parts: list[int] = []
    for piece in text.split(".")[:3]:
        digits = ""
        for ch in piece:
            if not ch.isdigit():
                break
            digits += ch
        if not digits:
            return None
        parts.append(int(digits))
    return tuple(parts) if len(parts) == 3 else None


def version_refusal(header: str | None) -> str | None:
    """Why a client announcing `x-modal-client-version: header` is refused, or None."""
    if not header:
        return (
            "this ketch server speaks Modal's protocol to the official `modal` client only "
            f"(supported versions: {SUPPORTED_TEXT}); the request had no client version"
        )
    version = parse_version(header)
    if version is None or not SUPPORTED_LOW <= version < SUPPORTED_HIGH:
        return (
            f"modal client {header} is not supported by this ketch server; "
            f"supported versions: {SUPPORTED_TEXT} (pip install 'modal>=1.5,<1.7')"
        )
    return None


def rpc_names(grpc: Any) -> list[str]:
    """Every RPC of the service, as named in the servicer base class."""
    base = grpc.ModalClientBase
    return sorted(getattr(base, "__abstractmethods__", ()))
