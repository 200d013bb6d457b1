"""Container credentials (SPEC I4): the store, and what a scoped peer may send."""

from __future__ import annotations

import hashlib
from types import SimpleNamespace
from typing import Any

import pytest

from ketch._server.calls import CallServer
from ketch._server.credentials import CredentialStore, Scope

pytestmark = pytest.mark.spec("I4")


# -- the store ---------------------------------------------------------------------------
def test_issue_gives_a_fresh_credential_bound_to_its_container() -> None:
    store = CredentialStore()
    one = store.issue("ta-1", "ap-1", "main")
    two = store.issue("ta-2", "ap-1", "main")
    assert one != two and one.startswith("kc-") and len(one) > 40
    assert store.lookup(one) == Scope("ta-1", "ap-1", "main")
    assert store.lookup(two) == Scope("ta-2", "ap-1", "main")
    assert store.lookup(one.encode()) == store.lookup(one)  # a header's bytes, too


def test_unknown_and_near_miss_credentials_are_not_found() -> None:
    store = CredentialStore()
    good = store.issue("ta-1", "ap-1", "main")
    for bad in ("", "kc-", good[:-1], good + "x", good.upper(), "kt-" + good[3:]):
        assert store.lookup(bad) is None


def test_revoke_ends_the_credential_and_only_that_one() -> None:
    store = CredentialStore()
    gone = store.issue("ta-1", "ap-1", "main")
    kept = store.issue("ta-2", "ap-1", "main")
    scope = store.lookup(gone)
    assert scope is not None and store.live(scope)
    store.revoke("ta-1")
    assert store.lookup(gone) is None
    assert not store.live(scope)
    assert store.lookup(kept) is not None
    store.revoke("ta-1")  # twice, or for a container that never had one: nothing happens
    store.revoke("ta-none")
    assert len(store) == 1


def test_a_second_issue_for_a_container_voids_its_first() -> None:
    store = CredentialStore()
    first = store.issue("ta-1", "ap-1", "main")
    old = store.lookup(first)
    second = store.issue("ta-1", "ap-1", "main")
    assert store.lookup(first) is None and store.lookup(second) is not None
    assert old is not None and not store.live(old)
    assert len(store) == 1


def test_the_store_keeps_digests_never_the_credentials() -> None:
    store = CredentialStore()
    credential = store.issue("ta-1", "ap-1", "main")
    held = repr(vars(store))
    assert credential not in held
    assert hashlib.sha256(credential.encode()).digest() in store._scopes


# -- what a scoped peer may send (the table in calls.py) ------------------------------------
def _fdef(fid: str, environment: str) -> Any:
    return SimpleNamespace(function_id=fid, tag=fid, environment=environment)


def _server() -> CallServer:
    functions = {"fu-main": _fdef("fu-main", "main"), "fu-other": _fdef("fu-other", "other")}
    calls = {"fc-main": {"app_id": "ap-main"}, "fc-other": {"app_id": "ap-other"}}
    store = SimpleNamespace(
        get_call=calls.get,
        app_environment={"ap-main": "main", "ap-other": "other"}.get,
    )
    scheduler = SimpleNamespace(
        functions=functions,
        inputs={"in-other": SimpleNamespace(function=functions["fu-other"])},
        store=store,
        credentials=CredentialStore(),
    )
    live = {"di-main": "main", "di-other": "other"}

    def environment_of(msg: dict[str, Any]) -> str | None:
        if msg.get("object_id"):
            return live.get(msg["object_id"])
        return msg.get("environment")

    objects = SimpleNamespace(environment_of=environment_of)
    apps = SimpleNamespace(apps={})
    return CallServer(scheduler, apps, None, "kt-token", objects)  # type: ignore[arg-type]


def _call(fid: str, iid: str = "in-new", **options: Any) -> dict[str, Any]:
    req: dict[str, Any] = {"args": b"", "method": None, "params": None}
    if options:
        req["options"] = options
    return {"t": "call", "fid": fid, "iid": iid, "kind": "call", "req": req}


SCOPE = Scope("ta-1", "ap-main", "main")

ALLOWED = [
    _call("fu-main"),
    {**_call("fu-main"), "t": "spawn", "rid": 1},
    _call("fu-not-deployed"),  # answered "not deployed", as for anyone
    _call("fu-main", secrets=[{"kind": "named", "name": "s", "environment": "main"}]),
    _call("fu-main", secrets=[{"kind": "inline", "values": {"A": "1"}}]),
    {"t": "get", "call_id": "fc-main", "rid": 1},
    {"t": "get", "call_id": "fc-unknown", "rid": 1},
    {"t": "cancel", "call_id": "fc-main", "rid": 1},
    {"t": "lookup", "environment": "main", "app": "a", "name": "f", "rid": 1},
    {"t": "obj", "op": "open", "kind": "dict", "environment": "main", "name": "d", "rid": 1},
    {"t": "obj", "op": "d.get", "object_id": "di-main", "key": b"k", "rid": 1},
    {"t": "obj", "op": "abort", "wid": "w-1"},
    {"t": "logs", "app_id": "ap-main"},
    {"t": "ping", "rid": 1},
]
REFUSED = [
    (_call("fu-other"), "function 'fu-other' is in environment 'other'"),
    ({**_call("fu-other"), "t": "spawn", "rid": 1}, "environment 'other'"),
    (_call("fu-main", iid="in-other"), "input in-other is of another environment"),
    (
        _call("fu-main", secrets=[{"kind": "named", "name": "s", "environment": "other"}]),
        "secret 's' is in environment 'other'",
    ),
    ({"t": "get", "call_id": "fc-other", "rid": 1}, "call fc-other is of environment 'other'"),
    ({"t": "cancel", "call_id": "in-other", "rid": 1}, "environment 'other'"),
    (
        {"t": "lookup", "environment": "other", "app": "a", "name": "f", "rid": 1},
        "a lookup in environment 'other'",
    ),
    (
        {"t": "obj", "op": "open", "kind": "dict", "environment": "other", "name": "d"},
        "a Dict or Queue of environment 'other'",
    ),
    ({"t": "obj", "op": "d.put", "object_id": "di-other", "key": b"k", "value": b"v"}, "other"),
    ({"t": "logs", "app_id": "ap-other"}, "the logs of app ap-other"),
    ({"t": "lease", "app_id": "ap-main"}, "holding an app"),
]


@pytest.mark.parametrize("msg", ALLOWED, ids=lambda m: f"{m['t']}-{m.get('op', '')}")
def test_a_scoped_peer_reaches_its_own_environment(msg: dict[str, Any]) -> None:
    assert _server()._refusal(SCOPE, msg) is None


@pytest.mark.parametrize(
    ("msg", "why"), REFUSED, ids=lambda v: v["t"] if isinstance(v, dict) else ""
)
def test_a_scoped_peer_is_refused_everything_else(msg: dict[str, Any], why: str) -> None:
    refusal = _server()._refusal(SCOPE, msg)
    assert refusal is not None and why in refusal


def test_every_client_message_kind_is_decided() -> None:
    # A new kind of client message must be added to the table (and to these tests).
    decided = {msg["t"] for msg in ALLOWED} | {msg["t"] for msg, _ in REFUSED}
    assert decided == set(CallServer.CLIENT_HANDLERS)
