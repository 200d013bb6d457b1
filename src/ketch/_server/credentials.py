"""Container credentials (SPEC I4): what a container holds in place of the server token.

Each container gets a random credential of its own when the scheduler starts it, bound to
the container, its app and its environment, and revoked when the container is gone. With
it the container may say hello as itself and, as an SDK client, reach what its own
environment holds (`calls.py` has the table of what a scoped peer may send); the management
API refuses it but for the volume routes of its environment (`api/auth.py`).

Nothing is written anywhere: a credential dies with its container or with the server, so
after a restart every container (and every credential) is new.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

# Told apart from the server token ("kt-") at a glance, in a log or a bug report.
PREFIX = "kc-"


@dataclass(frozen=True)
class Scope:
    """What one credential is for."""

    container_id: str
    app_id: str
    environment: str


def _digest(credential: str | bytes) -> bytes:
    raw = credential if isinstance(credential, bytes) else credential.encode("utf-8", "replace")
    return hashlib.sha256(raw).digest()


class CredentialStore:
    """The live credentials, by the SHA-256 of their text.

    Keyed by a digest, not the text: a dict lookup compares keys with `==`, whose time
    depends on how much of a guess matches; of a digest, that says nothing about the
    credential itself."""

    def __init__(self) -> None:
        self._scopes: dict[bytes, Scope] = {}
        self._by_container: dict[str, bytes] = {}

    def issue(self, container_id: str, app_id: str, environment: str) -> str:
        """A fresh credential for the container; one it had before is revoked."""
        self.revoke(container_id)
        credential = PREFIX + secrets.token_urlsafe(32)
        digest = _digest(credential)
        self._scopes[digest] = Scope(container_id, app_id, environment)
        self._by_container[container_id] = digest
        return credential

    def lookup(self, credential: str | bytes) -> Scope | None:
        """The scope of a live credential, or None."""
        digest = _digest(credential)
        scope = self._scopes.get(digest)
        if scope is None:
            return None
        held = self._by_container.get(scope.container_id, b"")
        return scope if hmac.compare_digest(held, digest) else None

    def live(self, scope: Scope) -> bool:
        """Whether the credential `scope` came from is still live."""
        return self._scopes.get(self._by_container.get(scope.container_id, b"")) is scope

    def revoke(self, container_id: str) -> None:
        digest = self._by_container.pop(container_id, None)
        if digest is not None:
            self._scopes.pop(digest, None)

    def __len__(self) -> int:
        return len(self._scopes)
