"""A stored app version that no longer validates (edited or damaged in SQLite by hand) is
marked broken on start and skipped: the server starts, the other apps serve and scale, and
`ketch app list` names the broken one with its error (issue 11)."""

from __future__ import annotations

import json
import sqlite3
import time

import httpx
import pytest
from cli_support import ketch, ok, python, write

from conftest import ServerHandle

APP = """
    import ketch

    app = ketch.App("{name}")


    @app.function(scaledown_window=1)
    def who() -> str:
        return "{name}"
"""

# How each app's current version is damaged in the store.
DAMAGE = {
    "opts-string": lambda spec: spec["functions"]["who"].update(options="x"),
    "inputs-text": lambda spec: spec["functions"]["who"]["options"].update(max_inputs="abc"),
    "not-json": None,
}


def _damage(server: ServerHandle) -> None:
    db = sqlite3.connect(server.home / "ketch.db")
    try:
        rows = db.execute(
            "SELECT a.app_id, a.name, a.version, v.spec FROM apps a JOIN app_versions v"
            " ON v.app_id = a.app_id AND v.version = a.version"
        ).fetchall()
        for app_id, name, version, text in rows:
            if name not in DAMAGE:
                continue
            change = DAMAGE[name]
            if change is None:
                text = text[: len(text) // 2]  # cut off mid-way, as a torn write would
            else:
                spec = json.loads(text)
                change(spec)
                text = json.dumps(spec)
            db.execute(
                "UPDATE app_versions SET spec = ? WHERE app_id = ? AND version = ?",
                (text, app_id, version),
            )
        db.commit()
    finally:
        db.close()


def _system_events(server: ServerHandle, app: str) -> list[str]:
    info = server.info()
    token = (server.home / "token").read_text().strip()
    resp = httpx.get(
        f"http://127.0.0.1:{info['api_port']}/v1/apps/{app}/logs",
        params={"source": "system"},
        headers={"Authorization": f"Bearer {token}"},
    )
    resp.raise_for_status()
    return [e["line"] for e in resp.json()["entries"]]


@pytest.mark.spec("C5", "C2")
def test_a_version_damaged_in_the_store_does_not_keep_the_server_down(
    fresh_server: ServerHandle, tmp_path
) -> None:
    home = fresh_server.home
    for name in (*DAMAGE, "healthy"):
        ok(ketch(home, "deploy", str(write(tmp_path / name / "app.py", APP.format(name=name)))))
    ok(ketch(home, "server", "stop"))
    _damage(fresh_server)

    # The next command starts the server again, and it comes up.
    rows = {r["name"]: r for r in json.loads(ok(ketch(home, "app", "list", "--json")))}
    for name in DAMAGE:
        assert rows[name]["state"] == "broken", rows[name]
        assert "stored version is invalid" in rows[name]["error"], rows[name]
    assert "functions.who.options" in rows["opts-string"]["error"]
    assert "max_inputs" in rows["inputs-text"]["error"]
    assert "JSON" in rows["not-json"]["error"]
    assert rows["healthy"]["state"] == "deployed" and rows["healthy"]["error"] is None
    table = ok(ketch(home, "app", "list"))
    assert "opts-string" in table and "is broken and not served" in table

    # The healthy app serves, and its container goes after its scale-down window.
    call = "import ketch; print(ketch.Function.from_name({!r}, 'who').remote())"
    assert ok(python(home, call.format("healthy"))).strip() == "healthy"
    deadline = time.monotonic() + 90
    while "container stopped (scaledown)" not in _system_events(fresh_server, "healthy"):
        assert time.monotonic() < deadline, _system_events(fresh_server, "healthy")
        time.sleep(0.2)
    log = (home / "server.log").read_text()
    assert "not restored" in log and "Traceback" not in log

    # A broken app is refused by name, and a redeploy serves it again.
    proc = python(home, call.format("opts-string"))
    assert proc.returncode != 0 and "NotFoundError" in proc.stderr
    ok(ketch(home, "deploy", str(tmp_path / "opts-string" / "app.py")))
    assert ok(python(home, call.format("opts-string"))).strip() == "opts-string"
    ok(ketch(home, "app", "stop", "inputs-text"))
    rows = {r["name"]: r for r in json.loads(ok(ketch(home, "app", "list", "--json")))}
    assert rows["opts-string"]["state"] == "deployed" and rows["opts-string"]["error"] is None
    assert rows["inputs-text"]["state"] == "stopped"
    history = json.loads(ok(ketch(home, "app", "history", "opts-string", "--json")))
    assert history[0]["error"] is not None and history[-1]["live"]
