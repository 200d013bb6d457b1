"""Object ids: a type prefix and random base-32 text, e.g. fc-01h4x..."""

from __future__ import annotations

import hashlib
import secrets

_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"


def new_id(prefix: str, nbytes: int = 12) -> str:
    n = int.from_bytes(secrets.token_bytes(nbytes), "big")
    chars = []
    for _ in range((nbytes * 8 + 4) // 5):
        chars.append(_ALPHABET[n & 31])
        n >>= 5
    return f"{prefix}-{''.join(chars)}"


def stable_id(prefix: str, *parts: str) -> str:
    """An id derived from its parts, so a redeploy keeps the same function ids."""
    digest = hashlib.sha256("\0".join(parts).encode()).hexdigest()[:20]
    return f"{prefix}-{digest}"
