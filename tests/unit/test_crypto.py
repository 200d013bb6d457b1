"""Encryption of secrets at rest."""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from ketch._server.crypto import CryptoError, SecretBox

pytestmark = pytest.mark.spec("A10")


def test_key_file_is_created_with_mode_0600(tmp_path: Path) -> None:
    key = tmp_path / "state" / "secret.key"
    SecretBox(key)
    assert key.is_file()
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    Fernet(key.read_bytes().strip())  # a valid key
    assert [p.name for p in key.parent.iterdir()] == ["secret.key"], "no temporary file left"


def test_mode_is_0600_even_with_a_permissive_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        SecretBox(tmp_path / "k")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "k").stat().st_mode) == 0o600


def test_round_trip_and_reuse_of_the_key(tmp_path: Path) -> None:
    key = tmp_path / "k"
    box = SecretBox(key)
    token = box.encrypt(b"hunter2")
    assert b"hunter2" not in token
    assert box.decrypt(token) == b"hunter2"
    before = key.read_bytes()
    assert SecretBox(key).decrypt(token) == b"hunter2"
    assert key.read_bytes() == before, "an existing key must never be replaced"


def test_wrong_key_fails(tmp_path: Path) -> None:
    token = SecretBox(tmp_path / "a").encrypt(b"data")
    with pytest.raises(CryptoError, match="could not decrypt"):
        SecretBox(tmp_path / "b").decrypt(token)


def test_tampered_token_fails(tmp_path: Path) -> None:
    box = SecretBox(tmp_path / "k")
    token = bytearray(box.encrypt(b"data"))
    token[-5] ^= 1
    with pytest.raises(CryptoError):
        box.decrypt(bytes(token))


def test_a_key_readable_by_others_is_refused(tmp_path: Path) -> None:
    key = tmp_path / "k"
    SecretBox(key)
    key.chmod(0o644)
    with pytest.raises(CryptoError, match="chmod 600"):
        SecretBox(key)


def test_a_corrupt_key_is_refused(tmp_path: Path) -> None:
    key = tmp_path / "k"
    fd = os.open(key, os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, b"not a key")
    os.close(fd)
    with pytest.raises(CryptoError, match="valid key"):
        SecretBox(key)


def test_concurrent_creation_agrees_on_one_key(tmp_path: Path) -> None:
    key = tmp_path / "k"
    boxes: list[SecretBox] = []
    barrier = threading.Barrier(8)

    def make() -> None:
        barrier.wait()
        boxes.append(SecretBox(key))

    threads = [threading.Thread(target=make) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    token = boxes[0].encrypt(b"same")
    assert all(b.decrypt(token) == b"same" for b in boxes)
    assert [p.name for p in tmp_path.iterdir()] == ["k"]
