"""Secrets from a dict, a name, a .env file and the local environment."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from ketch._utils.env_values import _parse_dotenv_fallback
from ketch.exception import InvalidError
from ketch.secret import Secret

pytestmark = pytest.mark.spec("A10")

_DOTENV = """\
# a comment
PLAIN=value
export EXPORTED=yes
SPACED = padded
SINGLE='single # not a comment'
DOUBLE="line1\\nline2"
INLINE=kept # dropped
EMPTY=
"""


def test_from_dict_drops_none_and_gives_an_inline_spec() -> None:
    s = Secret.from_dict({"A": "1", "B": None, "C": ""})
    spec = s.spec()
    assert spec == {"kind": "inline", "values": {"A": "1", "C": ""}}
    json.dumps(spec)
    assert Secret.from_dict().spec() == {"kind": "inline", "values": {}}


@pytest.mark.parametrize(
    "env",
    [{1: "x"}, {"A": 1}, {"A": b"x"}, {"": "x"}, {"A=B": "x"}, {"A": "x\0y"}, ["A"]],
)
def test_from_dict_refuses_what_cannot_be_an_environment(env: object) -> None:
    with pytest.raises(InvalidError, match=r"Secret\.from_dict"):
        Secret.from_dict(env)  # type: ignore[arg-type]


def test_error_for_a_bad_value_does_not_echo_it() -> None:
    with pytest.raises(InvalidError) as info:
        Secret.from_dict({"TOKEN": 123456789})  # type: ignore[dict-item]
    assert "123456789" not in str(info.value)


def test_repr_never_shows_values() -> None:
    s = Secret.from_dict({"API_KEY": "hunter2-very-secret"})
    for text in (repr(s), str(s), f"{s}", repr([s])):
        assert "hunter2" not in text
    assert "API_KEY" in repr(s)


def test_secret_cannot_be_built_directly() -> None:
    with pytest.raises(InvalidError, match="from_dict"):
        Secret()


def test_from_name_spec() -> None:
    s = Secret.from_name("db-creds", environment_name="prod", required_keys=["USER", "PASS"])
    assert s.spec() == {
        "kind": "named",
        "name": "db-creds",
        "environment": "prod",
        "required_keys": ["USER", "PASS"],
    }
    assert Secret.from_name("a").spec()["environment"] is None
    assert "db-creds" in repr(s)


@pytest.mark.parametrize("name", ["a", "A.b_c-9", "x" * 64, "9lives"])
def test_from_name_accepts_good_names(name: str) -> None:
    assert Secret.from_name(name).spec()["name"] == name


@pytest.mark.parametrize("name", ["", "-lead", ".hidden", "x" * 65, "has space", "a/b", 5])
def test_from_name_refuses_bad_names(name: object) -> None:
    with pytest.raises(InvalidError, match="secret name"):
        Secret.from_name(name)  # type: ignore[arg-type]


def test_from_name_refuses_a_string_for_required_keys() -> None:
    with pytest.raises(InvalidError, match="required_keys"):
        Secret.from_name("x", required_keys="KEY")


def _expected() -> dict[str, str]:
    return {
        "PLAIN": "value",
        "EXPORTED": "yes",
        "SPACED": "padded",
        "SINGLE": "single # not a comment",
        "DOUBLE": "line1\nline2",
        "INLINE": "kept",
        "EMPTY": "",
    }


def test_from_dotenv_reads_the_file_beside_a_path(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text(_DOTENV)
    module = tmp_path / "app.py"
    module.write_text("")
    assert Secret.from_dotenv(module).spec() == {"kind": "inline", "values": _expected()}
    assert Secret.from_dotenv(tmp_path).spec()["values"] == _expected()


def test_from_dotenv_searches_upwards_and_defaults_to_cwd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / ".env").write_text("TOP=1\n")
    nested = tmp_path / "a" / "b"
    nested.mkdir(parents=True)
    monkeypatch.chdir(nested)
    s = Secret.from_dotenv()
    monkeypatch.chdir(tmp_path.parent)  # where it looks was fixed when it was created
    assert s.spec()["values"] == {"TOP": "1"}


def test_from_dotenv_custom_filename(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("WHICH=default\n")
    (tmp_path / ".env.prod").write_text("WHICH=prod\n")
    assert Secret.from_dotenv(tmp_path, filename=".env.prod").spec()["values"] == {"WHICH": "prod"}


def test_from_dotenv_is_lazy_and_a_missing_file_fails_at_deploy(tmp_path: Path) -> None:
    s = Secret.from_dotenv(tmp_path, filename=".env.does-not-exist")
    assert ".env.does-not-exist" in repr(s)
    with pytest.raises(InvalidError, match=r"no \.env\.does-not-exist file"):
        s.spec()


def test_from_dotenv_refuses_a_path_as_filename() -> None:
    with pytest.raises(InvalidError, match="filename"):
        Secret.from_dotenv(filename="conf/.env")


def test_fallback_parser_matches_python_dotenv(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert {k: v for k, v in _parse_dotenv_fallback(_DOTENV).items() if v is not None} == (
        _expected()
    )
    assert _parse_dotenv_fallback("NOVALUE\n") == {"NOVALUE": None}
    (tmp_path / ".env").write_text(_DOTENV)
    monkeypatch.setitem(sys.modules, "dotenv", None)  # makes `import dotenv` fail
    assert Secret.from_dotenv(tmp_path).spec()["values"] == _expected()


def test_from_local_environ_copies_the_named_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KETCH_TEST_ONE", "1")
    monkeypatch.setenv("KETCH_TEST_TWO", "2")
    s = Secret.from_local_environ(["KETCH_TEST_ONE", "KETCH_TEST_TWO"])
    assert s.spec() == {"kind": "inline", "values": {"KETCH_TEST_ONE": "1", "KETCH_TEST_TWO": "2"}}
    assert "KETCH_TEST_ONE" in repr(s)


def test_from_local_environ_names_missing_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KETCH_TEST_SET", "x")
    monkeypatch.delenv("KETCH_TEST_UNSET_A", raising=False)
    monkeypatch.delenv("KETCH_TEST_UNSET_B", raising=False)
    s = Secret.from_local_environ(["KETCH_TEST_SET", "KETCH_TEST_UNSET_A", "KETCH_TEST_UNSET_B"])
    with pytest.raises(InvalidError, match="KETCH_TEST_UNSET_A, KETCH_TEST_UNSET_B") as info:
        s.spec()
    assert "KETCH_TEST_SET," not in str(info.value)


def test_from_local_environ_refuses_a_string() -> None:
    with pytest.raises(InvalidError, match="list of names"):
        Secret.from_local_environ("HOME")
