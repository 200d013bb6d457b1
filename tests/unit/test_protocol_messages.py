"""The call protocol's contract (`_utils/protocol/messages.py`): every kind has a type in each
direction it travels and a handler on the side that receives it, the server's checks accept
what the types describe, and every kind survives the wire unchanged."""

from __future__ import annotations

import ast
import asyncio
import typing
from pathlib import Path
from typing import Any, Literal, NotRequired, get_args, get_origin

import pytest

from ketch._client.client import Client
from ketch._runtime.entry import Runtime
from ketch._server import messages as checks
from ketch._server.calls import CallServer
from ketch._server.objects import ObjectServer
from ketch._utils import wire
from ketch._utils.protocol import messages as m

SRC = Path(m.__file__).resolve().parents[3]  # the folder holding the ketch package

DIRECTIONS: dict[str, typing.Mapping[str, Any]] = {
    "client -> server": m.FROM_CLIENT,
    "server -> client": m.TO_CLIENT,
    "container -> server": m.FROM_CONTAINER,
    "server -> container": m.TO_CONTAINER,
}

_ERROR: m.ErrorPayload = {"exc": b"\x80e", "exc_by_value": None, "repr": "E()", "tb": "tb"}
_REQ: m.Request = {
    "args": b"\x80args",
    "method": "run",
    "params": b"p",
    "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
}

# One message of each kind, in each direction, as its sender makes it.
EXAMPLES: dict[str, dict[str, Any]] = {
    "client -> server": {
        m.HELLO: {"t": m.HELLO, "role": "client", "token": "kt-x", "client_id": "cl-1"},
        m.CALL: {"t": m.CALL, "fid": "fu-1", "iid": "in-1", "kind": "gen", "req": _REQ},
        m.SPAWN: {"t": m.SPAWN, "fid": "fu-1", "iid": "fc-1", "req": _REQ, "rid": 1},
        m.GET: {"t": m.GET, "call_id": "fc-1", "timeout": 2.5, "rid": 2},
        m.LOOKUP: {"t": m.LOOKUP, "environment": "main", "app": "a", "name": "f", "rid": 3},
        m.CANCEL: {"t": m.CANCEL, "call_id": "fc-1", "rid": None},
        m.OBJ: {"t": m.OBJ, "op": "d.len", "object_id": "di-1", "rid": 4},
        m.LOGS: {"t": m.LOGS, "app_id": "ap-1"},
        m.LEASE: {"t": m.LEASE, "app_id": "ap-1"},
        m.PING: {"t": m.PING, "rid": 5},
    },
    "server -> client": {
        m.WELCOME: {"t": m.WELCOME, "max_message": 2**31},
        m.DENIED: {"t": m.DENIED, "reason": "bad token"},
        m.RES: {"t": m.RES, "iid": "in-1", "ok": False, "payload": None, "error": _ERROR},
        m.ITEM: {"t": m.ITEM, "iid": "in-1", "payload": b"\x80item"},
        m.REPLY: {"t": m.REPLY, "rid": 3, "ok": True, "info": {"function_id": "fu-1"}},
        m.LOG: {
            "t": m.LOG,
            "app_id": "ap-1",
            "function": "f",
            "container": "ta-1",
            "stream": "stdout",
            "line": "hello",
            "ts": 1.5,
        },
        m.PONG: {"t": m.PONG, "rid": 5},
    },
    "container -> server": {
        m.HELLO: {"t": m.HELLO, "role": "container", "token": "kt-x", "cid": "ta-1"},
        m.READY: {"t": m.READY, "web_addr": "unix:/tmp/ta-1.sock"},
        m.STARTUP_FAILED: {"t": m.STARTUP_FAILED, "error": _ERROR},
        m.OUT: {"t": m.OUT, "iid": "in-1", "ok": True, "payload": b"\x80out"},
        m.ITEM: {"t": m.ITEM, "iid": "in-1", "payload": b"\x80item"},
        m.STUCK: {"t": m.STUCK, "iid": "in-1"},
        m.STARTED: {"t": m.STARTED, "iid": "in-1"},
        m.UNQUEUED: {"t": m.UNQUEUED, "iids": ["in-2", "in-3"]},
    },
    "server -> container": {
        m.INIT: {
            "t": m.INIT,
            "function": {"tag": "f", "module": "app", "options": {"timeout": 30}},
            "params": None,
            "sys_path": ["/src"],
            "web_runtime": None,
            "web_method": None,
            "web_socket": "/tmp/ta-1.sock",
            "web_urls": {},
            "app_name": "a",
            "app_id": "ap-1",
            "max_message": 2**31,
        },
        m.DENIED: {"t": m.DENIED, "reason": "bad token"},
        m.INPUT: {"t": m.INPUT, "iid": "in-1", "kind": "call", **_REQ},
        m.BATCH: {
            "t": m.BATCH,
            "kind": "call",
            "inputs": [{"iid": "in-1", "args": b"\x80a", "method": None}],
        },
        m.CANCEL: {"t": m.CANCEL, "iid": "in-1", "reason": "timeout"},
        m.AGENT: {"t": m.AGENT, "socket": "/tmp/w-1/a-1/agent.sock"},
        m.STOP: {"t": m.STOP},
        m.UNQUEUE: {"t": m.UNQUEUE, "iids": ["in-2", "in-3"]},
    },
}


def _fields(tp: Any) -> tuple[set[str], set[str]]:
    """A message type's (required, all) field names. Read from the annotations: with
    postponed annotations, Python 3.11 reports every field of a TypedDict as required."""
    hints = typing.get_type_hints(tp, include_extras=True)
    required = {k for k, v in hints.items() if get_origin(v) is not NotRequired}
    return required, set(hints)


def _kind_of(tp: Any) -> str:
    literal = typing.get_type_hints(tp)["t"]
    assert get_origin(literal) is Literal, tp
    (kind,) = get_args(literal)
    return str(kind)


@pytest.mark.parametrize("direction", list(DIRECTIONS))
def test_each_kind_has_one_type_whose_t_names_it(direction: str) -> None:
    for kind, tp in DIRECTIONS[direction].items():
        assert _kind_of(tp) == kind, (direction, kind, tp)
    for op, tp in m.OBJECT_OPS.items():
        assert _kind_of(tp) == m.OBJ, op


def test_every_kind_constant_travels_somewhere() -> None:
    constants = {
        value
        for name, value in vars(m).items()
        if name.isupper() and isinstance(value, str) and not name.startswith("_")
    }
    used = set().union(*(set(types) for types in DIRECTIONS.values()))
    assert constants == used
    assert used >= m.HANDSHAKE


def test_every_kind_a_side_receives_has_its_handler() -> None:
    """Built from the receivers' own tables: a kind added to a direction without a handler
    on the side that receives it fails here."""
    receivers: dict[str, set[str]] = {
        "client -> server": set(CallServer.CLIENT_HANDLERS),
        "server -> client": set(Client.HANDLERS),
        "server -> container": set(Runtime.HANDLERS),
    }
    for direction, handled in receivers.items():
        assert handled == set(DIRECTIONS[direction]) - m.HANDSHAKE, direction
    assert set(ObjectServer.OPS) | {"abort"} == set(m.OBJECT_OPS)


def test_every_kind_the_server_receives_is_checked() -> None:
    """The server's checks cover each kind clients and containers send, and no other."""
    assert set(checks._client) | {m.HELLO, m.OBJ} == set(m.FROM_CLIENT)
    assert set(checks._ops) == set(m.OBJECT_OPS)
    assert set(checks._container) | {m.HELLO} == set(m.FROM_CONTAINER)


@pytest.mark.parametrize("direction", list(DIRECTIONS))
def test_the_examples_have_the_shape_of_their_type(direction: str) -> None:
    examples = EXAMPLES[direction]
    assert set(examples) == set(DIRECTIONS[direction])
    for kind, msg in examples.items():
        tp = m.OBJECT_OPS[msg["op"]] if kind == m.OBJ else DIRECTIONS[direction][kind]
        required, known = _fields(tp)
        assert required <= set(msg), (direction, kind)
        if kind != m.REPLY:  # a reply also carries its request's answer
            assert set(msg) <= known, (direction, kind)


def test_what_clients_and_containers_send_passes_the_server_checks_unchanged() -> None:
    for direction, check in (
        ("client -> server", checks.check_client),
        ("container -> server", checks.check_container),
    ):
        for kind, msg in EXAMPLES[direction].items():
            if kind == m.HELLO:
                assert checks.check_hello([msg]) == msg
            else:
                assert check(msg) == msg, (direction, kind)


def _all_examples() -> list[dict[str, Any]]:
    return [msg for examples in EXAMPLES.values() for msg in examples.values()]


def test_every_kind_survives_a_frame_unchanged() -> None:
    frame = wire.encode_frame(_all_examples())
    assert wire.decode(frame[8:]) == _all_examples()


def test_every_kind_survives_a_channel_unchanged() -> None:
    """Through the sender's own packer and frame header, over a real socket."""

    async def main() -> list[dict[str, Any]]:
        accepted: asyncio.Future[wire.Channel] = asyncio.get_running_loop().create_future()

        async def on_conn(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            accepted.set_result(wire.server_channel(r, w, wire.MAX_FRAME))

        server = await asyncio.start_server(on_conn, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        sender = await wire.open_channel(f"127.0.0.1:{port}")
        receiver = await accepted
        try:
            for msg in _all_examples():
                sender.send(msg)
            got: list[dict[str, Any]] = []
            while len(got) < len(_all_examples()):
                got.extend(await receiver.recv())
            return got
        finally:
            sender.close()
            receiver.close()
            server.close()
            await server.wait_closed()

    assert asyncio.run(main()) == _all_examples()


# Modules that send or dispatch call-protocol messages; each spells kinds by their constants.
_USERS = [
    "ketch/_server/calls.py",
    "ketch/_server/objects.py",
    "ketch/_runtime/entry.py",
    "ketch/_runtime/batch.py",
    "ketch/_client/client.py",
    "ketch/_client/objects.py",
    "ketch/_server/logs.py",
]


def _is_t(node: ast.AST) -> bool:
    """`x["t"]` or `x.get("t")`."""
    if isinstance(node, ast.Subscript):
        return isinstance(node.slice, ast.Constant) and node.slice.value == "t"
    return (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "get"
        and bool(node.args)
        and isinstance(node.args[0], ast.Constant)
        and node.args[0].value == "t"
    )


def _literal_kinds(tree: ast.AST) -> list[int]:
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Dict):
            for key, value in zip(node.keys, node.values, strict=True):
                literal = isinstance(value, ast.Constant) and isinstance(value.value, str)
                if isinstance(key, ast.Constant) and key.value == "t" and literal:
                    lines.append(node.lineno)
        elif isinstance(node, ast.Compare) and _is_t(node.left):
            for right in node.comparators:
                items = right.elts if isinstance(right, ast.Tuple | ast.List | ast.Set) else [right]
                if any(isinstance(i, ast.Constant) and isinstance(i.value, str) for i in items):
                    lines.append(node.lineno)
    return lines


@pytest.mark.parametrize("module", _USERS)
def test_kinds_are_spelled_by_their_constants(module: str) -> None:
    tree = ast.parse((SRC / module).read_text())
    assert _literal_kinds(tree) == [], f"{module}: kinds spelled as strings on these lines"


def test_the_literal_kind_finder_finds_them() -> None:
    tree = ast.parse('a = {"t": "out"}\nif msg["t"] == "item": pass\nmsg.get("t") in ("x",)\n')
    assert _literal_kinds(tree) == [1, 2, 3]
