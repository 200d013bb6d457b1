"""Pure parts of the Modal front end: client-version range, token pairs, RPC messages."""

from __future__ import annotations

import pytest

from ketch._modal_wire import proto
from ketch._utils import modal_tokens as auth


@pytest.mark.parametrize("version", ["1.5.0", "1.5.4", "1.6.4", "1.6.10.dev3"])
def test_supported_versions_pass(version: str) -> None:
    assert proto.version_refusal(version) is None


@pytest.mark.parametrize("version", ["1.4.9", "1.7.0", "2.0.0", "0.73.1", "garbage", "1.6"])
def test_other_versions_are_refused_with_the_range(version: str) -> None:
    refusal = proto.version_refusal(version)
    assert refusal is not None
    assert version in refusal and ">=1.5.0, <1.7.0" in refusal


def test_a_missing_version_is_refused() -> None:
    refusal = proto.version_refusal(None)
    assert refusal is not None and "no client version" in refusal


def test_token_pairs_check_against_their_server_token_only() -> None:
    token_id, secret = auth.new_pair("kt-one")
    assert token_id.startswith("ak-") and secret.startswith("as-")
    assert auth.check("kt-one", token_id, secret)
    assert not auth.check("kt-two", token_id, secret)
    other = "1" if secret[-1] == "0" else "0"
    assert not auth.check("kt-one", token_id, secret[:-1] + other)
    assert not auth.check("kt-one", None, secret)
    assert not auth.check("kt-one", "xx-" + token_id[3:], secret)


def test_unimplemented_message_names_the_rpc_and_feature() -> None:
    pytest.importorskip("grpclib", reason="the modal-wire-server extra is not installed")
    from ketch._modal_wire.servicer import unimplemented_message

    message = unimplemented_message("SandboxCreate")
    assert "SandboxCreate" in message and "sandboxes" in message
    assert "modal.Dict" in unimplemented_message("DictGetOrCreate")
    assert "function calls" in unimplemented_message("FunctionCallCancel")


@pytest.mark.parametrize("value", ["0", "9090", "unix:/tmp/ketch-modal.sock"])
def test_modal_wire_setting_accepts_a_port_or_a_unix_path(
    value: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ketch.config import Config

    monkeypatch.setenv("KETCH_MODAL_WIRE", value)
    assert Config.load().modal_wire == value


@pytest.mark.parametrize("value", ["abc", "70000", "unix:relative.sock", "-1"])
def test_modal_wire_setting_refuses_anything_else(
    value: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ketch.config import Config
    from ketch.exception import InvalidError

    monkeypatch.setenv("KETCH_MODAL_WIRE", value)
    with pytest.raises(InvalidError, match="KETCH_MODAL_WIRE"):
        Config.load()
