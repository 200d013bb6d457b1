"""Encryption at rest for secrets, with a Fernet key kept in a file of mode 0600."""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken

from ketch.exception import Error

__all__ = ["CryptoError", "SecretBox"]


class CryptoError(Error):
    """The key file is unusable, or a token was not made with this key."""


def _create_key_file(path: Path) -> None:
    """Write a new key to ``path`` unless a key is already there; never expose a partial file.

    The key goes to a private temporary file first and is then hard-linked into place, so a
    concurrent reader sees either no file or a complete key, and of two racing creators
    exactly one wins.
    """
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        # The umask can only remove bits; make sure the owner can still read the key.
        os.fchmod(fd, 0o600)
        os.write(fd, Fernet.generate_key() + b"\n")
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(tmp, path)
    except FileExistsError:
        pass
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


class SecretBox:
    """Encrypts and decrypts small blobs with the key stored at ``key_path``.

    The key file is created (mode 0600) on first use. An existing key file that other users
    can read is refused rather than silently used.
    """

    def __init__(self, key_path: Path) -> None:
        self.key_path = Path(key_path)
        if not self.key_path.exists():
            _create_key_file(self.key_path)
        mode = stat.S_IMODE(self.key_path.stat().st_mode)
        if mode & 0o077:
            raise CryptoError(
                f"the key file {self.key_path} is accessible to other users (mode {mode:04o}); "
                f"run: chmod 600 {self.key_path}"
            )
        key = self.key_path.read_bytes().strip()
        try:
            self._fernet = Fernet(key)
        except ValueError as exc:
            raise CryptoError(
                f"the key file {self.key_path} does not hold a valid key; restore it from a "
                "backup (secrets encrypted with a lost key cannot be recovered)"
            ) from exc

    def encrypt(self, data: bytes) -> bytes:
        """Return an authenticated token holding ``data``."""
        return self._fernet.encrypt(data)

    def decrypt(self, token: bytes) -> bytes:
        """Return the data in ``token``; :class:`CryptoError` if this key did not make it."""
        try:
            return self._fernet.decrypt(token)
        except InvalidToken as exc:
            raise CryptoError(
                f"could not decrypt: the data was not encrypted with the key in {self.key_path} "
                "or has been altered"
            ) from exc

    def __repr__(self) -> str:
        return f"SecretBox({str(self.key_path)!r})"
