"""Fuzzing the call protocol (issue 11, CI variant) against a real server, over TCP and the
containers' unix socket: frames before the hello (random bytes and lengths, truncated
frames, pickles, near-hellos) and messages after it (known and unknown kinds with fields of
the wrong type, missing or extra). The server must close every unauthenticated peer,
never run a pickle, keep authenticated connections alive through malformed messages, log
no traceback, and serve a normal `.remote()` afterwards.

Seeded (KETCH_FUZZ_SEED; KETCH_FUZZ_EXAMPLES scales the run).
"""

from __future__ import annotations

import os
import pickle
import socket
import struct
import uuid
from pathlib import Path
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st

from conftest import ServerHandle
from ketch._server.main import sockets_dir
from ketch._utils.wire import decode, encode_frame
from supports import callport_apps

SEED = int(os.environ.get("KETCH_FUZZ_SEED", "20240611"))
EXAMPLES = int(os.environ.get("KETCH_FUZZ_EXAMPLES", "400"))

_PICKLED: list[Path] = []


class _Mkdir:
    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.mkdir, (str(self.path),))


class Peer:
    """Raw connections to one server."""

    def __init__(self, handle: ServerHandle, marker: Path) -> None:
        info = handle.info()
        self.tcp = (str(info["host"]), int(info["call_port"]))  # type: ignore[call-overload]
        self.unix = str(sockets_dir(handle.home) / "call.sock")
        self.token = (handle.home / "token").read_text().strip()
        self.marker = marker
        self.connections = 0

    def connect(self, where: str) -> socket.socket:
        if where == "unix":
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.connect(self.unix)
        else:
            sock = socket.create_connection(self.tcp)
        sock.settimeout(30)
        self.connections += 1
        return sock

    def hello(self, token: str | None = None) -> bytes:
        return encode_frame(
            [
                {
                    "t": "hello",
                    "role": "client",
                    "client_id": uuid.uuid4().hex,
                    "token": self.token if token is None else token,
                }
            ]
        )


def _drain(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes (a timeout fails the test)."""
    out = b""
    while True:
        try:
            piece = sock.recv(65536)
        except ConnectionResetError:
            return out
        if not piece:
            return out
        out += piece


_END = 2**40  # the rid of the last ping; fuzzed ones are smaller


def _until_pong(sock: socket.socket) -> bool:
    """Read frames until the final ping's answer; False if the server hangs up first."""
    buf = b""
    while True:
        while len(buf) >= 8 and len(buf) >= 8 + struct.unpack(">Q", buf[:8])[0]:
            n = struct.unpack(">Q", buf[:8])[0]
            msgs, buf = decode(buf[8 : 8 + n]), buf[8 + n :]
            if {"t": "pong", "rid": _END} in msgs:
                return True
        try:
            piece = sock.recv(65536)
        except ConnectionResetError:
            return False
        if not piece:
            return False
        buf += piece


def _frames(data: bytes) -> list[dict[str, Any]]:
    msgs: list[dict[str, Any]] = []
    while len(data) >= 8:
        (n,) = struct.unpack(">Q", data[:8])
        if len(data) < 8 + n:
            break
        msgs.extend(decode(data[8 : 8 + n]))
        data = data[8 + n :]
    return msgs


# -- inputs before the hello ---------------------------------------------------------------
_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats()
    | st.text(max_size=30)
    | st.binary(max_size=30)
)
_values = st.recursive(
    _scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=10,
)


def _header(n: int) -> bytes:
    return struct.pack(">Q", n)


@st.composite
def preauth_inputs(draw: st.DrawFn, marker: Path) -> bytes:
    kind = draw(
        st.sampled_from(["bytes", "length", "truncated", "msgpack", "near_hello", "pickle"])
    )
    if kind == "bytes":
        return draw(st.binary(max_size=300))
    if kind == "length":
        return _header(draw(st.integers(0, 2**64 - 1))) + draw(st.binary(max_size=64))
    if kind == "truncated":
        body = msgpack.packb([{"t": "hello", "role": "client", "token": "x", "client_id": "c"}])
        return (_header(len(body)) + body)[: draw(st.integers(0, len(body) + 7))]
    if kind == "msgpack":
        body = msgpack.packb(draw(_values))
        return _header(len(body)) + body
    if kind == "near_hello":
        hello: dict[str, Any] = {
            "t": "hello",
            "role": draw(st.sampled_from(["client", "container", "admin", 5])),
            "token": draw(st.text(max_size=50) | _values),
            "client_id": draw(st.text(max_size=20) | _values),
            "cid": draw(st.text(max_size=20) | _values),
        }
        for key in draw(st.lists(st.sampled_from(sorted(hello)), max_size=2, unique=True)):
            del hello[key]
        batch = draw(st.sampled_from([[hello], [hello, hello], hello]))
        body = msgpack.packb(batch)
        return _header(len(body)) + body
    body = pickle.dumps([{"t": "hello", "role": "client", "token": "", "x": _Mkdir(marker)}])
    cut = draw(st.integers(0, 3))  # sometimes with a lying length
    return _header(len(body) + cut) + body


# -- messages after the hello ------------------------------------------------------------
_text = st.text(max_size=12)
_rid = st.integers(1, 10**6)
_blob = st.binary(max_size=24)
_partition = st.none() | st.text(max_size=70)
_OPTION_KEYS = [
    "cpu",
    "memory",
    "gpu",
    "timeout",
    "retries",
    "secrets",
    "max_inputs",
    "batch_max_size",
    "image",
]


def _request(fids: st.SearchStrategy[str]) -> st.SearchStrategy[dict[str, Any]]:
    plain = st.fixed_dictionaries({"args": _blob, "method": st.none() | _text, "params": st.none()})
    # Options and parameters make pools (and containers) of their own: only for functions
    # that do not exist, so that the run stays small.
    odd = st.fixed_dictionaries(
        {
            "args": _blob,
            "method": st.none() | _text,
            "params": st.none() | _blob,
            "options": st.none()
            | st.dictionaries(st.sampled_from(_OPTION_KEYS), _values, max_size=3),
        }
    )
    return st.one_of(
        st.tuples(fids, plain),
        st.tuples(st.text(min_size=1, max_size=12).map(lambda f: "fu-fuzz-" + f), odd),
    ).map(lambda pair: {"fid": pair[0], "req": pair[1]})


def _shapes(fids: st.SearchStrategy[str]) -> st.SearchStrategy[dict[str, Any]]:
    """Messages of every kind with fields of the right types (and random values): past
    the shape checks, into the scheduler and the objects module."""
    call = st.tuples(
        _request(fids), st.text(min_size=1, max_size=12), st.sampled_from(["call", "gen"])
    ).map(lambda x: {"t": "call", **x[0], "iid": "in-fuzz-" + x[1], "kind": x[2]})
    spawn = st.tuples(_request(fids), _text, _rid).map(
        lambda x: {"t": "spawn", **x[0], "iid": "fc-fuzz-" + x[1], "rid": x[2]}
    )
    simple = st.one_of(
        st.fixed_dictionaries(
            {"t": st.just("get"), "call_id": _text, "timeout": st.just(0), "rid": _rid}
        ),
        st.fixed_dictionaries(
            {
                "t": st.just("lookup"),
                "environment": st.sampled_from(["main", ""]) | _text,
                "app": st.sampled_from(["callport"]) | _text,
                "name": st.sampled_from(["echo", "zeros"]) | _text,
                "rid": _rid,
            }
        ),
        st.fixed_dictionaries({"t": st.just("cancel"), "call_id": _text, "rid": st.none() | _rid}),
        st.fixed_dictionaries(
            {"t": st.sampled_from(["logs", "lease"]), "app_id": _text.map(lambda a: "ap-fuzz-" + a)}
        ),
        st.fixed_dictionaries({"t": st.just("ping"), "rid": _rid}),
    )
    obj = st.fixed_dictionaries(
        {
            "t": st.just("obj"),
            "rid": _rid,
            "op": st.sampled_from(
                [
                    "open",
                    "ephemeral",
                    "list",
                    "delete",
                    "abort",
                    "d.get",
                    "d.put",
                    "d.update",
                    "d.scan",
                    "d.pop",
                    "d.len",
                    "d.clear",
                    "d.contains",
                    "q.put",
                    "q.get",
                    "q.len",
                    "q.next",
                    "q.clear",
                ]
            ),
        },
        optional={
            "object_id": st.sampled_from(["di-none", "qu-none"]) | _text,
            "kind": st.sampled_from(["dict", "queue", "thing"]),
            "environment": st.sampled_from(["main"]) | _text,
            "name": st.sampled_from(["fz-a", "fz-b", "bad name", ""]) | _text,
            "create": st.booleans(),
            "exclusive": st.booleans(),
            "allow_missing": st.booleans(),
            "key": _blob,
            "value": _blob,
            "pairs": st.lists(st.lists(_blob, min_size=2, max_size=2), max_size=3),
            "values": st.lists(_blob, max_size=3),
            "after": st.integers(0, 2**63 - 1),
            "limit": st.integers(1, 10_000),
            "n": st.integers(1, 5),
            "partition": _partition,
            "block": st.booleans(),
            "timeout": st.none() | st.floats(0, 10**9),
            "raise_empty": st.booleans(),
            "partition_ttl": st.floats(0, 10**9),
            "total": st.booleans(),
            "all": st.booleans(),
            "keys": st.booleans(),
            "op_id": st.none() | _text,
            "wid": st.none() | _text,
        },
    )
    return st.one_of(call, spawn, simple, obj)


@st.composite
def postauth_message(draw: st.DrawFn, fids: st.SearchStrategy[str]) -> dict[str, Any]:
    if draw(st.integers(0, 3)) == 0:  # anything at all
        msg: dict[str, Any] = dict(draw(st.dictionaries(_text, _values, max_size=5)))
        if draw(st.booleans()):
            msg["t"] = draw(st.sampled_from(["call", "obj", "out", "hello", "zzz"]) | _values)
        return msg
    msg = draw(_shapes(fids))
    mutation = draw(st.sampled_from(["none", "none", "drop", "retype", "extra"]))
    key = draw(st.sampled_from(sorted(msg)))
    if mutation == "drop":
        del msg[key]
    elif mutation == "retype":
        msg[key] = draw(_values)
    elif mutation == "extra":
        msg[draw(_text)] = draw(_values)
    if msg.get("op") in ("hold", "q.get", "q.next", "q.put") and msg.get("block") is not False:
        # These wait by design (for a delete, an item, a free slot): briefly, here.
        msg["timeout"] = 0.01
    if msg.get("t") == "get":
        msg["timeout"] = 0
    return msg


def _settings(n: int) -> Any:
    return settings(
        max_examples=n,
        database=None,
        deadline=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
        derandomize=False,
    )


@pytest.mark.spec("C4")
@pytest.mark.timeout(600)
def test_fuzz_the_call_protocol(fresh_server: ServerHandle, tmp_path: Path) -> None:
    marker = tmp_path / "pickle-ran"
    peer = Peer(fresh_server, marker)
    where = st.sampled_from(["tcp", "unix"])
    stats = {"preauth": 0, "denied": 0, "messages": 0, "frames_after_hello": 0}

    @seed(SEED)
    @_settings(EXAMPLES)
    @given(data=preauth_inputs(marker), where=where)
    def before_hello(data: bytes, where: str) -> None:
        with peer.connect(where) as sock:
            sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)  # a truncated frame ends here
            got = _frames(_drain(sock))
        assert all(m["t"] == "denied" for m in got), got  # never a welcome
        stats["preauth"] += 1
        stats["denied"] += bool(got)

    def after_hello(fids: st.SearchStrategy[str]) -> None:
        @seed(SEED + 1)
        @_settings(EXAMPLES)
        @given(
            batch=st.lists(postauth_message(fids), min_size=1, max_size=8),
            where=where,
            garbage=st.none() | st.binary(min_size=1, max_size=40),
        )
        def one(batch: list[dict[str, Any]], where: str, garbage: bytes | None) -> None:
            with peer.connect(where) as sock:
                sock.sendall(peer.hello())
                body = msgpack.packb(batch)
                sock.sendall(_header(len(body)) + body)
                if garbage is not None:
                    # Bytes that are not a frame of messages: this connection goes, no other.
                    sock.sendall(_header(len(garbage)) + garbage)
                    sock.shutdown(socket.SHUT_WR)
                    _drain(sock)
                else:
                    # The connection lives on past whatever it was sent: a ping is answered.
                    sock.sendall(encode_frame([{"t": "ping", "rid": _END}]))
                    assert _until_pong(sock), "the connection did not survive its messages"
            stats["messages"] += len(batch)
            stats["frames_after_hello"] += 1

        one()

    before_hello()
    with callport_apps.app.run(show_logs=False):
        # Calls with random arguments reach a real container too (it refuses them).
        real = callport_apps.echo._function_id
        assert real is not None
        after_hello(st.sampled_from([real, "fu-none"]))
        # The server still does its job, and said nothing alarming while being fuzzed.
        assert callport_apps.echo.remote({"after": "fuzz"}) == {"after": "fuzz"}
    print(f"call protocol fuzz: {stats}, {peer.connections} connections, seed {SEED}")
    assert stats["preauth"] >= EXAMPLES and stats["frames_after_hello"] >= EXAMPLES
    assert not marker.exists(), "a pickle sent to the call port was loaded"
    log = (fresh_server.home / "server.log").read_text(errors="replace")
    (tmp_path / "server.log").write_text(log)
    assert "Traceback" not in log, log[log.index("Traceback") - 2000 :][:6000]
