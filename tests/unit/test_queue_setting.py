"""The queue bound setting (S3): read from KETCH_MAX_QUEUE, at least 1."""

from __future__ import annotations

from pathlib import Path

import pytest

from ketch.config import Config
from ketch.exception import InvalidError


@pytest.mark.spec("S3", "C8")
def test_max_queue_from_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    empty = tmp_path / "ketch.toml"
    empty.write_text("")
    monkeypatch.setenv("KETCH_CONFIG_FILE", str(empty))
    monkeypatch.delenv("KETCH_MAX_QUEUE", raising=False)
    assert Config.load().max_queue == 10_000
    monkeypatch.setenv("KETCH_MAX_QUEUE", "25")
    assert Config.load().max_queue == 25
    monkeypatch.setenv("KETCH_MAX_QUEUE", "0")
    with pytest.raises(InvalidError, match="KETCH_MAX_QUEUE"):
        Config.load()
