"""The server's checks of call-protocol messages (`_server/messages.py`): what the SDK and
the runtime send passes unchanged, anything else is a BadMessage, never another error."""

from __future__ import annotations

from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

import ketch
from ketch._server.messages import BadMessage, check_client, check_container, check_hello

app = ketch.App("messages-unit")


@app.cls()
class Probe:
    @ketch.method()
    def run(self) -> None: ...


def _wire(msg: dict[str, Any]) -> dict[str, Any]:
    """`msg` as the server receives it: through msgpack (tuples become lists)."""
    out: dict[str, Any] = msgpack.unpackb(msgpack.packb(msg), strict_map_key=False)
    return out


def _call(options: dict[str, Any] | None = None) -> dict[str, Any]:
    req: dict[str, Any] = {"args": b"\x80args", "method": "run", "params": b"p"}
    if options is not None:
        req["options"] = options
    return _wire({"t": "call", "fid": "fu-1", "iid": "in-1", "kind": "call", "req": req})


def test_what_the_sdk_sends_passes_unchanged() -> None:
    args = b"a" * 10_000
    raw = {
        "t": "call",
        "fid": "fu-1",
        "iid": "in-1",
        "kind": "gen",
        "req": {"args": args, "method": None, "params": None},
    }
    checked = check_client(raw)
    assert checked == raw
    assert checked["req"]["args"] is args  # payloads are not copied
    for msg in (
        {"t": "get", "call_id": "fc-1", "timeout": 2.5, "rid": 3},
        {"t": "cancel", "call_id": "in-1", "rid": None},
        {"t": "lookup", "environment": "main", "app": "a", "name": "f", "rid": 1},
        {
            "t": "obj",
            "op": "d.put",
            "object_id": "di-1",
            "key": b"k",
            "value": b"v",
            "op_id": "op-1",
            "rid": 4,
        },
        {"t": "obj", "op": "d.update", "object_id": "di-1", "pairs": [[b"k", b"v"]], "rid": 5},
        {"t": "obj", "op": "abort", "wid": "w-1", "rid": None},
        {
            "t": "obj",
            "op": "q.get",
            "object_id": "qu-1",
            "n": 2,
            "partition": None,
            "block": True,
            "timeout": None,
            "raise_empty": True,
            "wid": "w-2",
            "rid": 6,
        },
        {
            "t": "obj",
            "op": "delete",
            "kind": "dict",
            "environment": "main",
            "name": "x",
            "allow_missing": True,
            "rid": 7,
        },
        {"t": "ping", "rid": 8},
    ):
        assert check_client(msg) == msg
    out = {
        "t": "out",
        "iid": "in-1",
        "ok": False,
        "error": {"exc": b"e", "exc_by_value": None, "repr": "E()", "tb": "tb"},
    }
    assert check_container(out) == out


def test_the_options_of_class_handles_pass() -> None:
    handles = [
        Probe.with_options(
            cpu=(0.5, 2),
            memory=(64, 128),
            gpu=["a10g", "h100:2"],
            timeout=30,
            secrets=[
                ketch.Secret.from_dict({"TOKEN": "x"}),
                ketch.Secret.from_name("db", required_keys=["URL"]),
            ],
            retries=ketch.Retries(max_retries=2, initial_delay=0.5),
            min_containers=0,
            max_containers=3,
            scaledown_window=10,
        ),
        Probe.with_concurrency(max_inputs=8, target_inputs=4),
        Probe.with_batching(max_batch_size=4, wait_ms=100),
    ]
    for handle in handles:
        msg = _call(handle._overrides)
        assert check_client(msg) == msg


@pytest.mark.parametrize(
    "options, needle",
    [
        ({"cpu": [2, 1]}, "cpu"),
        ({"cpu": [1]}, "cpu"),
        ({"memory": "lots"}, "memory"),
        ({"gpu": "TPU:99"}, "gpu"),
        ({"timeout": 0}, "timeout"),
        ({"image": "x"}, "unknown option"),
        ({"retries": {"max_retries": "2"}}, "retries"),
        ({"retries": {"tries": 2}}, "retries"),
        ({"max_inputs": 0}, "max_inputs"),
        ({"batch_max_size": 4}, "wait_ms"),
        ({"secrets": [{"kind": "inline", "values": {"A=B": "x"}}]}, "A=B"),
        ({"secrets": [{"kind": "inline", "values": {"K": "a\0b"}}]}, "NUL"),
        ({"secrets": [{"kind": "sealed", "data": "x"}]}, "secrets"),
    ],
)
def test_bad_options_are_refused_by_name(options: dict[str, Any], needle: str) -> None:
    with pytest.raises(BadMessage, match=needle):
        check_client(_call(options))


@pytest.mark.parametrize(
    "msg, needle",
    [
        ({"fid": 5}, "fid"),
        ({"kind": "spawn"}, "kind"),
        ({"req": {"args": "text", "method": None, "params": None}}, "args"),
        ({"req": None}, "req"),
    ],
)
def test_a_call_of_the_wrong_shape_names_the_field(msg: dict[str, Any], needle: str) -> None:
    with pytest.raises(BadMessage, match=needle):
        check_client({**_call(), **msg})


def test_unknown_kinds_and_missing_fields_are_bad_messages() -> None:
    for msg in (
        {},
        {"t": 1},
        {"t": "nope"},
        {"t": "get"},
        {"t": "obj", "op": "d.nope"},
        {"t": "obj", "op": "d.get", "object_id": "di-1", "key": "not bytes"},
        {"t": "obj", "op": "d.scan", "object_id": "di-1", "after": 2**64},
        {"t": "obj", "op": "delete", "kind": "dict"},
        {"t": "get", "call_id": "x", "timeout": float("inf"), "rid": 1},
        {"t": "logs", "app_id": True},
    ):
        with pytest.raises(BadMessage):
            check_client(msg)
    for msg in (
        {"t": "out", "iid": "in-1", "ok": False},
        {"t": "out", "iid": "in-1", "ok": 1, "payload": b""},
        {"t": "item", "iid": "in-1", "payload": "text"},
        {"t": "startup_failed", "error": "boom"},
        {"t": "input"},
    ):
        with pytest.raises(BadMessage):
            check_container(msg)


def test_only_a_well_formed_hello_opens_a_connection() -> None:
    client = {"t": "hello", "role": "client", "token": "kt-x", "client_id": "cl-1"}
    assert check_hello([client]) == client
    container = {"t": "hello", "role": "container", "token": "kt-x", "cid": "ta-1"}
    assert check_hello([container]) == container
    for batch in (
        [],
        [client, client],
        [{**client, "token": 5}],
        [{**client, "role": "x"}],
        [{**client, "t": "call"}],
        [{"t": "hello", "role": "client", "token": "t"}],
    ):
        assert check_hello(batch) is None


_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**64), 2**64)
    | st.floats()
    | st.text(max_size=20)
    | st.binary(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
_fields = st.sampled_from(
    [
        "t",
        "op",
        "fid",
        "iid",
        "kind",
        "req",
        "rid",
        "call_id",
        "timeout",
        "app_id",
        "app",
        "name",
        "environment",
        "object_id",
        "key",
        "value",
        "pairs",
        "values",
        "after",
        "limit",
        "n",
        "partition",
        "partition_ttl",
        "block",
        "ok",
        "payload",
        "error",
        "web_addr",
        "token",
        "role",
        "client_id",
        "cid",
        "wid",
        "op_id",
        "options",
    ]
)
_kinds = st.sampled_from(
    [
        "call",
        "spawn",
        "get",
        "lookup",
        "cancel",
        "obj",
        "logs",
        "lease",
        "ping",
        "hello",
        "out",
        "item",
        "ready",
        "startup_failed",
        "stuck",
        "zzz",
    ]
)
_ops = st.sampled_from(
    [
        "open",
        "ephemeral",
        "list",
        "hold",
        "delete",
        "abort",
        "d.get",
        "d.put",
        "d.update",
        "d.scan",
        "d.pop",
        "q.put",
        "q.get",
        "q.next",
        "q.len",
        "q.clear",
        "x.y",
    ]
)
messages = st.builds(
    lambda t, op, rest: {**rest, "t": t, "op": op},
    _kinds,
    _ops,
    st.dictionaries(_fields, _values, max_size=8),
)


@seed(20240611)
@settings(
    max_examples=1000, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)
@given(msg=messages)
def test_any_message_is_checked_or_refused_never_crashes(msg: dict[str, Any]) -> None:
    for check in (check_client, check_container):
        try:
            out = check(_wire(msg) if _encodable(msg) else msg)
        except BadMessage:
            continue
        assert isinstance(out, dict) and isinstance(out["t"], str)
    check_hello([msg])


def _encodable(msg: dict[str, Any]) -> bool:
    try:
        msgpack.packb(msg)
    except (TypeError, ValueError, OverflowError):
        return False
    return True
