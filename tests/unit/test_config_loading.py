"""Config: defaults, then a profile of the toml file, then KETCH_* variables (env wins)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ketch.config import Config
from ketch.exception import InvalidError

pytestmark = pytest.mark.spec("C8")


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    """No KETCH_* from the outside, and no ~/.ketch.toml of the person running the tests."""
    import os

    for name in list(os.environ):
        if name.startswith("KETCH_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    return monkeypatch


def write_toml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "ketch.toml"
    path.write_text(text)
    return path


def test_defaults(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    cfg = Config.load()
    assert cfg.home == (tmp_path / "home" / ".ketch").resolve()
    assert (cfg.server_host, cfg.api_port, cfg.environment) == ("127.0.0.1", 0, "main")
    assert cfg.server_file == cfg.home / "server.json"


def test_default_profile_then_environment_wins(
    clean_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    path = write_toml(
        tmp_path,
        """
        [default]
        home = "~/state"
        environment = "dev"
        api_port = 7001
        stop_grace = 2
        verbose = true
    """.replace("\n        ", "\n"),
    )
    clean_env.setenv("KETCH_CONFIG_FILE", str(path))
    cfg = Config.load()
    assert cfg.home == (tmp_path / "home" / "state").resolve()
    assert (cfg.environment, cfg.api_port, cfg.stop_grace, cfg.verbose) == ("dev", 7001, 2.0, True)
    assert isinstance(cfg.stop_grace, float)

    clean_env.setenv("KETCH_ENVIRONMENT", "prod")
    clean_env.setenv("KETCH_API_PORT", "7002")
    clean_env.setenv("KETCH_HOME", str(tmp_path / "elsewhere"))
    clean_env.setenv("KETCH_VERBOSE", "off")
    cfg = Config.load()
    assert (cfg.environment, cfg.api_port, cfg.verbose) == ("prod", 7002, False)
    assert cfg.home == (tmp_path / "elsewhere").resolve()
    assert cfg.stop_grace == 2.0  # not overridden: the file's value stays


def test_profile_selection(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    path = write_toml(
        tmp_path, 'active = "b"\n[a]\nenvironment = "env-a"\n[b]\nenvironment = "env-b"\n'
    )
    clean_env.setenv("KETCH_CONFIG_FILE", str(path))
    assert Config.load().environment == "env-b"  # the file's `active`
    clean_env.setenv("KETCH_PROFILE", "a")
    assert Config.load().environment == "env-a"  # the variable wins over `active`
    assert Config.load(profile="b").environment == "env-b"  # an explicit argument wins


def test_a_file_without_the_default_profile_is_fine(
    clean_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    clean_env.setenv("KETCH_CONFIG_FILE", str(write_toml(tmp_path, '[other]\nworkspace = "w"\n')))
    assert Config.load().workspace == "local"


@pytest.mark.parametrize(
    ("text", "needles"),
    [
        ("[default]\nbogus = 1\n", ["unknown setting 'bogus'", "profile 'default'"]),
        ('[default]\napi_port = "x"\n', ["'api_port'", "expected int", "'x'"]),
        ("[default]\napi_port = 70000\n", ["'api_port'", "between 0 and 65535"]),
        ('[default]\nverbose = "yes"\n', ["'verbose'", "expected bool"]),
        ("[default]\nresult_ttl = true\n", ["'result_ttl'", "expected int"]),
        ("[default]\nresult_ttl = -1\n", ["'result_ttl'", "negative"]),
        ('[default]\nenvironment = ""\n', ["'environment'", "empty"]),
        ('home = "/x"\n', ["top-level setting 'home'", "profile table"]),
        ('active = "missing"\n[default]\n', ["no profile 'missing'"]),
        ("active = 3\n", ["'active'"]),
        ("[default\n", ["not valid TOML"]),
    ],
)
def test_bad_file_settings_are_named(
    clean_env: pytest.MonkeyPatch, tmp_path: Path, text: str, needles: list[str]
) -> None:
    path = write_toml(tmp_path, text)
    clean_env.setenv("KETCH_CONFIG_FILE", str(path))
    with pytest.raises(InvalidError) as info:
        Config.load()
    message = str(info.value)
    assert str(path) in message
    for needle in needles:
        assert needle in message


@pytest.mark.parametrize(
    ("name", "value", "needle"),
    [
        ("KETCH_API_PORT", "abc", "KETCH_API_PORT='abc': expected int"),
        ("KETCH_CALL_PORT", "-5", "KETCH_CALL_PORT"),
        ("KETCH_VERBOSE", "maybe", "KETCH_VERBOSE='maybe': expected true or false"),
        ("KETCH_SCALEDOWN_GRACE", "soon", "KETCH_SCALEDOWN_GRACE='soon'"),
        ("KETCH_CONFIG_FILE", "/no/such/ketch.toml", "KETCH_CONFIG_FILE"),
    ],
)
def test_bad_environment_variables_are_named(
    clean_env: pytest.MonkeyPatch, name: str, value: str, needle: str
) -> None:
    clean_env.setenv(name, value)
    with pytest.raises(InvalidError, match=needle.replace("(", r"\(")):
        Config.load()


def test_missing_profile_named_by_variable(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    clean_env.setenv("KETCH_CONFIG_FILE", str(write_toml(tmp_path, "[default]\n[x]\n")))
    clean_env.setenv("KETCH_PROFILE", "nope")
    with pytest.raises(InvalidError, match=r"no profile 'nope' \(profiles: default, x\)"):
        Config.load()
