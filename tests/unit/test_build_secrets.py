"""Sealing the inline secrets of build steps (pure logic over a real key file)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ketch._server.build_secrets import BuildSecrets
from ketch._server.crypto import SecretBox
from ketch.exception import NotFoundError


def _spec(values: dict[str, str]) -> dict[str, object]:
    return {
        "python_version": "3.11",
        "steps": [
            {"type": "pip_install", "packages": ["six"]},
            {"type": "run_function", "name": "f", "secrets": [
                {"name": "stored", "environment": None, "required_keys": []},
                {"values": values},
            ]},
        ],
        "files": [],
    }  # fmt: skip


def test_inline_values_become_a_stable_keyed_digest(tmp_path: Path) -> None:
    box = SecretBox(tmp_path / "secret.key")
    sealer = BuildSecrets(tmp_path / "build-secrets", box)
    spec = _spec({"TOKEN": "s3cr3t"})
    sealed = sealer.seal(spec)
    refs = sealed["steps"][1]["secrets"]  # type: ignore[index]
    assert refs[0] == {"name": "stored", "environment": None, "required_keys": []}
    digest = refs[1]["digest"]
    assert set(refs[1]) == {"digest"} and len(digest) == 64
    assert spec["steps"][1]["secrets"][1] == {"values": {"TOKEN": "s3cr3t"}}  # type: ignore[index]
    assert sealer.values(digest) == {"TOKEN": "s3cr3t"}
    assert b"s3cr3t" not in (tmp_path / "build-secrets" / digest).read_bytes()
    # Same values, same digest; sealing twice changes nothing; other values differ.
    assert sealer.seal(_spec({"TOKEN": "s3cr3t"})) == sealed
    assert sealer.seal(sealed) == sealed
    assert sealer.seal(_spec({"TOKEN": "other"}))["steps"][1]["secrets"][1]["digest"] != digest
    # A server with another key gives another digest and cannot read this one.
    elsewhere = BuildSecrets(tmp_path / "b2", SecretBox(tmp_path / "other.key"))
    assert elsewhere.seal(_spec({"TOKEN": "s3cr3t"})) != sealed
    with pytest.raises(NotFoundError, match="deploy it again here"):
        elsewhere.values(digest)
