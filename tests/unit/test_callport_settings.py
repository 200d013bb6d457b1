"""The call port's settings: defaults, environment overrides and the ranges they keep."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ketch.config import Config
from ketch.exception import InvalidError

pytestmark = pytest.mark.spec("C8")


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    for name in list(os.environ):
        if name.startswith("KETCH_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    return monkeypatch


def test_defaults_and_overrides(clean_env: pytest.MonkeyPatch) -> None:
    cfg = Config.load()
    assert (cfg.max_frame_preauth, cfg.max_message_bytes) == (64 * 1024, 2 * 1024**3)
    assert (cfg.hello_timeout, cfg.max_unauthenticated) == (10.0, 128)
    clean_env.setenv("KETCH_MAX_FRAME_PREAUTH", "4096")
    clean_env.setenv("KETCH_MAX_MESSAGE_BYTES", str(3 * 1024**3))
    clean_env.setenv("KETCH_HELLO_TIMEOUT", "2.5")
    clean_env.setenv("KETCH_MAX_UNAUTHENTICATED", "8")
    cfg = Config.load()
    assert (cfg.max_frame_preauth, cfg.max_message_bytes) == (4096, 3 * 1024**3)
    assert (cfg.hello_timeout, cfg.max_unauthenticated) == (2.5, 8)


@pytest.mark.parametrize(
    ("name", "value", "needle"),
    [
        ("KETCH_MAX_FRAME_PREAUTH", "100", "a hello fits"),
        ("KETCH_MAX_FRAME_PREAUTH", str(64 * 1024**2), "16777216"),
        ("KETCH_HELLO_TIMEOUT", "0", "hello_timeout"),
        ("KETCH_MAX_UNAUTHENTICATED", "0", "at least 1"),
        ("KETCH_MAX_MESSAGE_BYTES", "abc", "expected int"),
        ("KETCH_MAX_MESSAGE_BYTES", str(1024**3), "dict_value_limit"),
    ],
)
def test_bad_values_are_named(
    clean_env: pytest.MonkeyPatch, name: str, value: str, needle: str
) -> None:
    clean_env.setenv(name, value)
    with pytest.raises(InvalidError, match=needle):
        Config.load()


def test_a_smaller_dict_limit_allows_a_smaller_message_cap(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("KETCH_MAX_MESSAGE_BYTES", str(2 * 1024**2))
    clean_env.setenv("KETCH_DICT_VALUE_LIMIT", str(1024**2))
    assert Config.load().max_message_bytes == 2 * 1024**2
