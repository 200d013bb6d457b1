"""Configuration as the CLI sees it: a profile file picks the state directory and the
environment; KETCH_* variables win; a bad setting stops the command with its name."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from cli_support import assert_clean_error, ketch, ok, write

pytestmark = pytest.mark.spec("C8")


def test_profile_file_and_environment_variables(server, tmp_path) -> None:
    config = write(
        tmp_path / "ketch.toml",
        f"""
        active = "testing"

        [testing]
        home = "{server.home}"
        environment = "cfg-env"

        [elsewhere]
        home = "{tmp_path / "unused-home"}"
    """,
    )
    env: dict[str, Any] = {"KETCH_CONFIG_FILE": str(config), "KETCH_HOME": ""}
    # The profile names the session server's home: status finds that server.
    out = ok(ketch(server.home, "server", "status", **env))
    assert f"pid {server.pid()}" in out and str(server.home) in out

    # The profile's environment is where secrets (and deploys) go by default...
    name = f"cfg-{uuid.uuid4().hex[:8]}"
    ok(ketch(server.home, "secret", "create", name, "A=1", **env))
    assert name in ok(ketch(server.home, "secret", "list", "--env", "cfg-env"))
    assert name not in ok(ketch(server.home, "secret", "list"))
    # ...and KETCH_ENVIRONMENT wins over it.
    assert name not in ok(ketch(server.home, "secret", "list", **env, KETCH_ENVIRONMENT="main"))
    ok(ketch(server.home, "secret", "delete", name, "--env", "cfg-env"))

    # KETCH_PROFILE picks another profile, and a KETCH_HOME variable beats the file.
    proc = ketch(server.home, "server", "status", **{**env, "KETCH_PROFILE": "elsewhere"})
    assert proc.returncode == 1 and "unused-home" in proc.stdout
    out = ok(
        ketch(
            server.home,
            "server",
            "status",
            **{**env, "KETCH_PROFILE": "elsewhere", "KETCH_HOME": str(server.home)},
        )
    )
    assert f"pid {server.pid()}" in out
    assert not (tmp_path / "unused-home").exists()  # status never starts a server


@pytest.mark.parametrize(
    ("toml", "env", "needles"),
    [
        ('[default]\napi_port = "high"\n', {}, ["api_port", "expected int"]),
        ('[default]\ncolour = "blue"\n', {}, ["unknown setting 'colour'"]),
        ("[default]\n", {"KETCH_PROFILE": "ghost"}, ["no profile 'ghost'"]),
        ("[default]\n", {"KETCH_API_PORT": "twelve"}, ["KETCH_API_PORT='twelve'"]),
    ],
)
def test_bad_setting_is_named_in_one_line(server, tmp_path, toml, env, needles) -> None:
    config = tmp_path / "ketch.toml"
    config.write_text(toml)
    for command in (("app", "list"), ("server", "status")):
        proc = ketch(server.home, *command, KETCH_CONFIG_FILE=str(config), **env)
        assert_clean_error(proc, "InvalidError", *needles)
