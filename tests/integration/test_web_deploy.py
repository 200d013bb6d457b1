"""Deployed web endpoints through the real CLI (W5, W7, W9) and the platform's errors for
endpoints that cannot answer (W17).
"""

from __future__ import annotations

import json
import re
import subprocess
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from cli_support import app_rows, assert_clean_error, deployed, ketch, ok, write

import ketch as ketch_sdk
from supports import web_broken
from supports.web_helpers import (
    api,
    cold_starts,
    containers,
    gateway_port,
    runtime_pids,
    steady_load,
    wait_for,
)

APP = """
    import ketch

    app = ketch.App("{name}")


    @app.function()
    @ketch.fastapi_endpoint({args})
    def hello() -> str:
        return "{text}"
"""


def deploy_app(home: Path, path: Path, name: str, text: str, args: str = "") -> str:
    """Deploy an app of one endpoint; returns the URL `ketch deploy` printed for it."""
    write(path, APP.format(name=name, text=text, args=args))
    out = ok(ketch(home, "deploy", str(path)))
    match = re.search(r"^\s+hello\s+(http://127\.0\.0\.1:\d+)$", out, re.M)
    assert match, out
    return match.group(1)


def host_of(url: str) -> dict[str, Any]:
    for ep in api("GET", "/v1/endpoints"):
        if ep["url"] == url:
            return dict(ep)
    raise AssertionError(f"no endpoint serves {url}")


@pytest.mark.spec("W7")
@pytest.mark.spec("W9")
def test_redeploy_keeps_the_url_and_rolls_without_failures(
    ketch_server: Any, tmp_path: Path
) -> None:
    name = f"web-roll-{uuid.uuid4().hex[:8]}"
    app_file = tmp_path / "roll.py"
    url = deploy_app(ketch_server.home, app_file, name, "v1")
    try:
        # The printed URL works unchanged from every client.
        curl = subprocess.run(
            ["curl", "-sS", "--max-time", "60", url], capture_output=True, text=True, timeout=90
        )
        assert curl.returncode == 0 and json.loads(curl.stdout) == "v1", curl.stderr
        with urllib.request.urlopen(url, timeout=30) as resp:
            assert json.loads(resp.read()) == "v1"
        assert httpx.get(url, timeout=30).json() == "v1"
        import requests

        assert requests.get(url, timeout=30).json() == "v1"

        # A steady loop of requests across a redeploy: every one answered, v1 then v2.
        with steady_load(url) as seen:
            time.sleep(2)
            assert deploy_app(ketch_server.home, app_file, name, "v2") == url
            wait_for(lambda: seen and seen[-1][1] == '"v2"', timeout=30, what="v2 to answer")
            time.sleep(2)
        failures = [s for s in seen if s[0] != 200]
        assert not failures, failures[:5]
        texts = [t for _, t in seen]
        first_v2 = texts.index('"v2"')
        assert set(texts[:first_v2]) == {'"v1"'} and set(texts[first_v2:]) == {'"v2"'}, texts
        assert first_v2 >= 3 and len(texts) - first_v2 >= 3, (first_v2, len(texts))
    finally:
        ketch(ketch_server.home, "app", "stop", name, "-y")


@pytest.mark.spec("W9")
def test_from_name_get_web_url(ketch_server: Any, tmp_path: Path) -> None:
    name = f"web-named-{uuid.uuid4().hex[:8]}"
    url = deploy_app(ketch_server.home, tmp_path / "named.py", name, "named")
    try:
        # From any process: the handle is looked up on first use.
        assert ketch_sdk.Function.from_name(name, "hello").get_web_url() == url
        fn = ketch_sdk.Function.from_name(name, "hello")
        fn.hydrate()
        assert fn.get_web_url() == url
        assert httpx.get(url, timeout=60).json() == "named"
    finally:
        ketch(ketch_server.home, "app", "stop", name, "-y")


@pytest.mark.spec("W5")
def test_label_of_another_deployed_app_is_refused(ketch_server: Any, tmp_path: Path) -> None:
    home = ketch_server.home
    tag = uuid.uuid4().hex[:8]
    label = f"shared-{tag}"
    owner, intruder = f"web-owner-{tag}", f"web-intruder-{tag}"
    url = deploy_app(home, tmp_path / "owner.py", owner, "owner", f'label="{label}"')
    try:
        write(
            tmp_path / "intruder.py",
            APP.format(name=intruder, text="intruder", args=f'label="{label}"')
            + """

    @app.function()
    @ketch.fastapi_endpoint()
    def other() -> str:
        return "other"
""",
        )
        proc = ketch(home, "deploy", str(tmp_path / "intruder.py"))
        assert_clean_error(proc, label, owner)
        # Nothing of the failed deploy was kept: no app, no endpoint, the owner untouched.
        assert deployed(home, intruder) is None
        assert not [r for r in app_rows(home) if r["name"] == intruder]
        assert not [ep for ep in api("GET", "/v1/endpoints") if ep["app"] == intruder]
        assert host_of(url)["app"] == owner
        assert httpx.get(url, timeout=60).json() == "owner"
        # The same deploy again still refuses, the same way.
        assert_clean_error(ketch(home, "deploy", str(tmp_path / "intruder.py")), label)
    finally:
        ketch(home, "app", "stop", owner, "-y")


# -- W17: endpoints that cannot answer -------------------------------------------------------


@pytest.mark.spec("W17")
@pytest.mark.spec("R5")
def test_container_that_fails_to_start_gets_502_and_is_retried(ketch_server: Any) -> None:
    with web_broken.app.run(show_logs=False):
        url = web_broken.broken.get_web_url()
        assert url is not None
        before = cold_starts()
        r = httpx.get(url, timeout=60)
        assert r.status_code == 502
        assert r.text.startswith("ketch:")
        assert "a_web_module_that_does_not_exist" in r.text
        assert cold_starts() == before + 1
        # The next request tries a fresh container (and fails the same way).
        r = httpx.get(url, timeout=60)
        assert r.status_code == 502 and "a_web_module_that_does_not_exist" in r.text
        assert cold_starts() == before + 2


@pytest.mark.spec("W17")
def test_stopped_app_gets_503_from_ketch(ketch_server: Any, tmp_path: Path) -> None:
    name = f"web-stopped-{uuid.uuid4().hex[:8]}"
    url = deploy_app(ketch_server.home, tmp_path / "stopped.py", name, "up")
    host = host_of(url)["host"]
    port = gateway_port(ketch_server.home)
    assert httpx.get(url, timeout=60).json() == "up"
    ok(ketch(ketch_server.home, "app", "stop", name, "-y"))
    app_id = next(r["app_id"] for r in app_rows(ketch_server.home) if r["name"] == name)
    wait_for(
        lambda: not containers(app_id) and not runtime_pids(app_id),
        timeout=20,
        what="the stopped app's containers to go",
    )
    # Both the printed URL and the host-routed one say what happened.
    for r in (
        httpx.get(url, timeout=30),
        httpx.get(f"http://127.0.0.1:{port}/", headers={"host": f"{host}.localhost"}, timeout=30),
    ):
        assert r.status_code == 503 and r.text.startswith("ketch:"), r.text
        assert name in r.text
