"""What the dashboard pages show, read from the server's own objects and store (read
only): apps, functions, calls, secrets' names and keys, objects. No secret value and no
user object (the server never unpickles one) is ever read here."""

from __future__ import annotations

import collections
import pickle
import pickletools
from typing import TYPE_CHECKING, Any

from ketch._server.api.ops import function_tags, spawned_detail, web_status
from ketch._server.store import CallRecords
from ketch.exception import InvalidError, NotFoundError

if TYPE_CHECKING:
    from ketch._server.main import Server

LIVE_STATES = ("deployed", "ephemeral", "broken")


def environments(server: Server) -> list[str]:
    rows = server.store._db.execute(
        "SELECT environment FROM apps UNION SELECT environment FROM secrets"
        " UNION SELECT environment FROM volumes UNION SELECT environment FROM objects"
    ).fetchall()
    return sorted({"main", *(str(r[0]) for r in rows)})


# -- apps ---------------------------------------------------------------------------------
def apps_rows(server: Server, *, include_stopped: bool) -> list[dict[str, Any]]:
    """Each app: name, state (broken when it did not come back on start), version, when
    that version was deployed, its number of functions and its live containers."""
    deployed_at = dict(
        server.store._db.execute(
            "SELECT app_id, MAX(created) FROM app_versions GROUP BY app_id"
        ).fetchall()
    )
    containers: collections.Counter[str] = collections.Counter(
        c.pool.function.app_id for c in server.scheduler.containers.values()
    )
    out = []
    for row in server.store.list_apps():
        app_id = row["app_id"]
        state = row["state"]
        if app_id in server.apps.broken and state == "deployed":
            state = "broken"
        if state not in LIVE_STATES and not include_stopped:
            continue
        live = server.apps.apps.get(app_id)
        out.append(
            {
                **row,
                "state": state,
                "deployed_at": deployed_at.get(app_id, row["created"]),
                "functions": len(live["functions"]) if live else None,
                "containers": containers.get(app_id, 0),
                "running": live is not None,
                "ephemeral": row["state"] == "ephemeral",
            }
        )
    out.sort(key=lambda r: r["deployed_at"], reverse=True)
    return out


def app_row(server: Server, app_id: str) -> dict[str, Any]:
    row = server.store._db.execute(
        "SELECT app_id, name, environment, state, version, created, updated FROM apps"
        " WHERE app_id = ?",
        (app_id,),
    ).fetchone()
    if row is None:
        raise NotFoundError(f"no app {app_id!r} on this server")
    keys = ("app_id", "name", "environment", "state", "version", "created", "updated")
    out = dict(zip(keys, row, strict=True))
    broken = server.apps.broken.get(app_id)
    out["error"] = broken["error"] if broken else None
    if broken and out["state"] == "deployed":
        out["state"] = "broken"
    out["running"] = app_id in server.apps.apps
    return out


def app_functions(server: Server, app_id: str) -> list[dict[str, Any]]:
    """The functions of the version being served (else of the newest stored version),
    with their web URLs and, while running, their containers and queue."""
    live = server.apps.apps.get(app_id)
    if live is not None:
        functions = live["stored"]["functions"]
    else:
        versions = server.apps.stored_versions(app_id)
        functions = versions[-1][1]["functions"] if versions else {}
    status = server.scheduler.status(app_id)
    out = []
    for tag, spec in sorted(functions.items()):
        web = spec.get("web") or None
        kind = "web endpoint" if web else ("class" if spec.get("kind") == "cls" else "function")
        st = status.get(tag) or {}
        out.append(
            {
                "tag": tag,
                "kind": kind,
                "web_type": (web or {}).get("type"),
                "url": spec.get("web_url") if live is not None else None,
                "host_url": spec.get("web_host_url") if live is not None else None,
                "containers": st.get("containers") or {},
                "queued": st.get("queued", 0),
                "running": st.get("running", 0),
                "waiting": st.get("waiting") or [],
                "gpu": (spec.get("options") or {}).get("gpu"),
            }
        )
    return out


# -- calls --------------------------------------------------------------------------------
def app_calls(
    server: Server, app_id: str, limit: int, function: str | None = None
) -> list[dict[str, Any]]:
    """An app's newest calls (spawned and web), as `ketch call list` shows them."""
    server.records.flush()
    records = CallRecords(server.store)
    tags = function_tags(server, app_id)
    rows = [
        {
            "call_id": r["call_id"],
            "kind": "spawn",
            "function": tags.get(r["function_id"], r["function_id"]),
            "status": r["status"],
            "attempts": r["attempts"],
            "created": r["created"],
            "http_status": None,
            "duration": None if r["finished"] is None else r["finished"] - r["created"],
        }
        for r in records.spawned(app_id, limit)
    ] + [
        {
            "call_id": r["call_id"],
            "kind": "web",
            "function": r["function"],
            "status": web_status(r),
            "http_status": r["http_status"],
            "attempts": 1,
            "created": r["created"],
            "duration": r["duration"],
        }
        for r in records.web(app_id, limit)
    ]
    if function is not None:
        rows = [r for r in rows if r["function"] == function]
    rows.sort(key=lambda r: r["created"], reverse=True)
    return rows[:limit]


def all_calls(server: Server, limit: int) -> list[dict[str, Any]]:
    """The newest calls of every app."""
    server.records.flush()
    db = server.store._db
    names = {r["app_id"]: r["name"] for r in server.store.list_apps()}
    rows: list[dict[str, Any]] = []
    spawned = db.execute(
        "SELECT call_id, app_id, function_id, status, attempts, created, finished FROM calls"
        " ORDER BY created DESC LIMIT ?",
        (limit,),
    ).fetchall()
    tags: dict[str, dict[str, str]] = {}
    for call_id, app_id, fid, status, attempts, created, finished in spawned:
        if app_id not in tags:
            tags[app_id] = function_tags(server, app_id)
        rows.append(
            {
                "call_id": call_id,
                "app_id": app_id,
                "app": names.get(app_id, app_id),
                "kind": "spawn",
                "function": tags[app_id].get(fid, fid),
                "status": status,
                "http_status": None,
                "attempts": attempts,
                "created": created,
                "duration": None if finished is None else finished - created,
            }
        )
    web = db.execute(
        "SELECT call_id, app_id, function, status, outcome, created, duration FROM web_calls"
        " ORDER BY created DESC LIMIT ?",
        (limit,),
    ).fetchall()
    for call_id, app_id, function, code, outcome, created, duration in web:
        rows.append(
            {
                "call_id": call_id,
                "app_id": app_id,
                "app": names.get(app_id, app_id),
                "kind": "web",
                "function": function,
                "status": web_status({"http_status": code, "outcome": outcome}),
                "http_status": code,
                "attempts": 1,
                "created": created,
                "duration": duration,
            }
        )
    rows.sort(key=lambda r: r["created"], reverse=True)
    return rows[:limit]


def call_detail(server: Server, call_id: str) -> dict[str, Any]:
    """One call: its status, and its result's size or its error with the traceback."""
    server.records.flush()
    row = server.store.get_call(call_id)
    if row is not None:
        out = spawned_detail(server, row)
        out["traceback"] = None
        if row["result"] is not None:
            # The server's own record (as in `ketch call get`); the user's value inside it
            # stays pickled and is never loaded.
            record = pickle.loads(row["result"])
            if not record.get("ok"):
                out["traceback"] = (record.get("error") or {}).get("tb") or None
        return out
    web = CallRecords(server.store).web_call(call_id)
    if web is None:
        raise NotFoundError(f"no call record {call_id!r}")
    return {
        "call_id": call_id,
        "kind": "web",
        "app_id": web["app_id"],
        "function": web["function"],
        "status": web_status(web),
        "http_status": web["http_status"],
        "outcome": web["outcome"],
        "attempts": 1,
        "created": web["created"],
        "duration": web["duration"],
        "result": None,
        "error": None,
        "traceback": None,
    }


# -- secrets, objects ---------------------------------------------------------------------
def secrets(server: Server, environment: str) -> list[dict[str, Any]]:
    """Names and keys of an environment's secrets. The values are decrypted only to read
    their keys and dropped at once: they never leave this function."""
    out = []
    for row in server.store.list_secrets(environment):
        try:
            keys = sorted(server.apps.secret_values(environment, row["name"]))
            error = None
        except Exception as exc:  # a secret sealed under another key: say so, show no keys
            keys, error = [], f"cannot be read: {type(exc).__name__}"
        out.append({**row, "keys": keys, "error": error})
    return out


def describe_key(data: bytes) -> str:
    """A dict key as text when its pickle is one plain constant (a str, number, bytes,
    bool or None), read from the opcodes without unpickling anything; otherwise its size."""
    values: list[Any] = []
    try:
        for op, arg, _ in pickletools.genops(data):
            if op.name in ("PROTO", "FRAME", "MEMOIZE", "PUT", "BINPUT", "LONG_BINPUT", "STOP"):
                continue
            if op.name in ("NONE", "NEWTRUE", "NEWFALSE"):
                values.append({"NONE": None, "NEWTRUE": True, "NEWFALSE": False}[op.name])
            elif isinstance(arg, str | bytes | int | float) and op.name not in (
                "GLOBAL",
                "STACK_GLOBAL",
                "INST",
                "OBJ",
            ):
                values.append(arg)
            else:
                raise InvalidError("not a plain constant")
    except (InvalidError, ValueError, EOFError):
        values = []
    if len(values) == 1:
        return repr(values[0])
    return f"<pickled object, {len(data)} bytes>"


async def dict_keys(server: Server, object_id: str, limit: int) -> list[dict[str, Any]]:
    page = await server.calls.objects.dicts.scan(object_id, 0, limit, keys=True, values=False)
    return [{"seq": seq, "key": describe_key(key or b"")} for seq, key, _ in page]


def object_row(server: Server, kind: str, object_id: str) -> dict[str, Any]:
    obj = server.calls.objects.live.get(object_id)
    if obj is None or obj.kind != kind:
        raise NotFoundError(f"no {kind} {object_id!r} on this server")
    return {"object_id": obj.object_id, "name": obj.name, "environment": obj.environment}
