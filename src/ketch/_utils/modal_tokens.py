"""Token pairs for the official client, derived from the server token (nothing stored).

`ketch token create --modal` makes a random id and its secret, an HMAC of the id under the
server token; the front end checks a pair by recomputing it. Rotating the server token
revokes every pair."""

from __future__ import annotations

import hashlib
import hmac
import secrets

ID_PREFIX = "ak-"
SECRET_PREFIX = "as-"


def secret_for(server_token: str, token_id: str) -> str:
    digest = hmac.new(server_token.encode(), b"modal-wire:" + token_id.encode(), hashlib.sha256)
    return SECRET_PREFIX + digest.hexdigest()[:40]


def new_pair(server_token: str) -> tuple[str, str]:
    token_id = ID_PREFIX + secrets.token_hex(10)
    return token_id, secret_for(server_token, token_id)


def check(server_token: str, token_id: str | None, token_secret: str | None) -> bool:
    if not token_id or not token_secret or not token_id.startswith(ID_PREFIX):
        return False
    return hmac.compare_digest(secret_for(server_token, token_id), token_secret)
