"""Proxy-auth tokens (SPEC W15): `wk-` ids with `ws-` secrets, stored as hashes only."""

from __future__ import annotations

import hashlib
import hmac
import secrets

# Request headers that may carry credentials; all are stripped before user code sees them.
CREDENTIAL_HEADERS = frozenset({b"ketch-key", b"ketch-secret", b"modal-key", b"modal-secret"})


def new_token() -> tuple[str, str]:
    return "wk-" + secrets.token_urlsafe(12), "ws-" + secrets.token_urlsafe(24)


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def credentials(headers: list[tuple[bytes, bytes]]) -> tuple[str, str, bool] | None:
    """(key, secret, came from Authorization) from any of the accepted header forms."""
    found: dict[bytes, str] = {}
    bearer = None
    for name, value in headers:
        if name in CREDENTIAL_HEADERS:
            found[name] = value.decode("latin-1").strip()
        elif name == b"authorization":
            text = value.decode("latin-1").strip()
            if text[:7].lower() == "bearer ":
                key, sep, secret = text[7:].strip().partition(".")
                if sep and key.startswith("wk-"):
                    bearer = (key, secret)
    for key_h, secret_h in ((b"ketch-key", b"ketch-secret"), (b"modal-key", b"modal-secret")):
        if key_h in found and secret_h in found:
            return found[key_h], found[secret_h], False
    if bearer is not None:
        return bearer[0], bearer[1], True
    return None


def check(stored: dict[str, str], key: str, secret: str) -> bool:
    """`stored` maps live token ids to secret hashes."""
    want = stored.get(key)
    return want is not None and hmac.compare_digest(want, hash_secret(secret))
