"""The fork-server template of a function starts when the function is deployed, so that
even the first container after a deploy is forked from it (_backends/forkserver.py
`ForkServer.prepare`, bounded by fork_templates and fork_deploy_mb)."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
from cli_support import deployed, ketch, ok, write

import ketch as ketch_sdk
from supports import procs
from supports.web_helpers import app_log, wait_for

_APP = """
    import ketch

    app = ketch.App("{name}")


    @app.function()
    def hello(who: str) -> str:
        return f"hello {{who}}"
"""


def _templates_of(app_id: str) -> list[int]:
    """Pids of the fork-server templates that load a function of `app_id`."""
    found = []
    needle = f"KETCH_APP_ID={app_id}".encode()
    for pid, cmdline, environ in procs.processes():
        if b"ketch._runtime.template" in cmdline and needle in environ.split(b"\0"):
            found.append(pid)
    return found


@pytest.mark.spec("S2")
def test_a_template_started_at_deploy_serves_the_first_request(server: Any, tmp_path: Path) -> None:
    name = f"deploy-template-{uuid.uuid4().hex[:8]}"
    app_file = write(tmp_path / "app.py", _APP.format(name=name))
    ok(ketch(server.home, "deploy", str(app_file)))
    row = deployed(server.home, name)
    assert row is not None
    app_id = row["app_id"]
    try:
        # Before any call: the template is there, loading (or holding) the function.
        wait_for(lambda: _templates_of(app_id), 60, what="a template started at deploy")
        assert ketch_sdk.Function.from_name(name, "hello").remote("you") == "hello you"
        lines = [e["line"] for e in app_log(app_id) if e["stream"] == "system"]
        assert any(
            "container forked from its function's template (started at deploy)" in line
            for line in lines
        ), lines
    finally:
        ok(ketch(server.home, "app", "stop", name))
    # Its template goes with the app, even one whose function had never been called.
    wait_for(lambda: not _templates_of(app_id), 30, what="the app's templates gone")


@pytest.mark.spec("S2")
def test_a_template_started_at_deploy_goes_when_its_app_stops_uncalled(
    server: Any, tmp_path: Path
) -> None:
    name = f"deploy-template-{uuid.uuid4().hex[:8]}"
    app_file = write(tmp_path / "app.py", _APP.format(name=name))
    ok(ketch(server.home, "deploy", str(app_file)))
    row = deployed(server.home, name)
    assert row is not None
    wait_for(lambda: _templates_of(row["app_id"]), 60, what="a template started at deploy")
    ok(ketch(server.home, "app", "stop", name))
    wait_for(lambda: not _templates_of(row["app_id"]), 30, what="the app's templates gone")
