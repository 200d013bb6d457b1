"""The web dashboard (O4) in a real browser: Playwright drives Debian's chromium against the
session's real server, logged in through the link the real `ketch dashboard` prints.

One deployed app (two versions, a named secret, a web endpoint and a plain function), one
browser and one logged-in browser context serve the whole module. Every response body the
browser gets is recorded, and none may hold the secret's value. Screenshots of each page
go to $KETCH_DASHBOARD_SCREENSHOTS (else a pytest temporary directory).
"""

from __future__ import annotations

import contextlib
import html
import json
import os
import re
import textwrap
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from cli_support import ketch, ok

import ketch as ketch_sdk
from supports.web_helpers import api, wait_for

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
needs_browser = pytest.mark.skipif(
    not Path(CHROMIUM).exists(),
    reason=f"no {CHROMIUM}: install Debian's chromium (scripts/setup does, as root)",
)

APP = """
    import sys

    import ketch

    app = ketch.App("{name}")


    @app.function(secrets=[ketch.Secret.from_name("{secret}")])
    @ketch.fastapi_endpoint()
    def hello(msg: str = "") -> str:
        print(f"hello printed {{msg}}", flush=True)
        print(f"hello stderr {{msg}}", file=sys.stderr, flush=True)
        return "{text}"


    @app.function()
    def work(x: int) -> int:
        if x < 0:
            raise ValueError(f"negative input {{x}}")
        return 2 * x
"""


@dataclass
class Dash:
    home: Path
    name: str
    app_id: str
    url: str  # the endpoint's URL
    secret_name: str
    secret_value: str
    api: str  # the management API's base URL
    call_id: str  # a spawned call that failed
    volume: str
    dict_name: str
    shots: Path
    bodies: list[tuple[str, bytes]] = field(default_factory=list)
    console_errors: list[str] = field(default_factory=list)

    def page(self, path: str) -> str:
        return f"{self.api}/dashboard{path}"


@pytest.fixture(scope="module")
def dash(ketch_server: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dash]:
    home: Path = ketch_server.home
    work = tmp_path_factory.mktemp("dashboard")
    tag = uuid.uuid4().hex[:8]
    name, secret, value = f"dash-{tag}", f"dash-secret-{tag}", f"s3cr3t-{uuid.uuid4().hex}"
    ok(ketch(home, "secret", "create", secret, f"API_TOKEN={value}"))
    path = work / "dash_app.py"
    for text in ("v1", "v2"):  # two versions: the history has something to roll back to
        path.write_text(textwrap.dedent(APP.format(name=name, secret=secret, text=text)))
        ok(ketch(home, "deploy", str(path)))
    row = next(r for r in api("GET", "/v1/apps") if r["name"] == name and r["state"] == "deployed")
    url = next(e["url"] for e in api("GET", "/v1/endpoints") if e["app"] == name)
    assert httpx.get(url, timeout=60).json() == "v2"
    failed = ketch_sdk.Function.from_name(name, "work").spawn(-1)
    with pytest.raises(ValueError):
        failed.get(timeout=60)
    volume, dict_name = f"dash-vol-{tag}", f"dash-dict-{tag}"
    ok(ketch(home, "volume", "create", volume))
    (work / "notes.txt").write_text("volume file\n")
    ok(ketch(home, "volume", "put", volume, str(work / "notes.txt"), "/docs/"))
    d = ketch_sdk.Dict.from_name(dict_name, create_if_missing=True)
    d["greeting"] = "hello"
    d[42] = "answer"
    shots = Path(
        os.environ.get("KETCH_DASHBOARD_SCREENSHOTS")
        or tmp_path_factory.mktemp("dashboard-screenshots")
    )
    shots.mkdir(parents=True, exist_ok=True)
    info = ketch_server.info()
    yield Dash(
        home,
        name,
        row["app_id"],
        url,
        secret,
        value,
        f"http://127.0.0.1:{info['api_port']}",
        failed.object_id,
        volume,
        dict_name,
        shots,
    )
    # The session's server is shared: what this module made goes.
    with contextlib.suppress(Exception):
        api("POST", f"/v1/apps/{row['app_id']}/stop")
    for args in (
        ("volume", "delete", volume, "-y"),
        ("dict", "delete", dict_name, "-y"),
        ("secret", "delete", secret),
    ):
        ok(ketch(home, *args))


def login_url(home: Path) -> str:
    out = ok(ketch(home, "dashboard"))
    match = re.search(r"^(http://\S+/dashboard/login\?token=\S+)$", out, re.M)
    assert match, out
    return match.group(1)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        pytest.skip(f"no {CHROMIUM}: install Debian's chromium (scripts/setup does, as root)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


def _record(dash: Dash, response: Any) -> None:
    if response.headers.get("content-type", "").startswith("text/event-stream"):
        return  # never ends; the log stream is read on its own in the secrets test
    with contextlib.suppress(Exception):  # a redirect or an aborted request has no body
        dash.bodies.append((response.url, response.body()))


@pytest.fixture(scope="module")
def page(browser: Any, dash: Dash) -> Iterator[Any]:
    """One logged-in page (1280x800, light), recording every response body."""
    context = browser.new_context(viewport={"width": 1280, "height": 800}, color_scheme="light")
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=dash.api)
    context.on("response", lambda r: _record(dash, r))
    pg = context.new_page()

    # A script error or a policy violation (CSP) shows on the console, not on the page.
    def on_console(m: Any) -> None:
        if m.type == "error":
            dash.console_errors.append(m.text)

    pg.on("console", on_console)
    pg.on("pageerror", lambda e: dash.console_errors.append(str(e)))
    pg.goto(login_url(dash.home))
    pg.wait_for_url("**/dashboard/apps")
    yield pg
    context.close()


def shot(dash: Dash, page: Any, name: str) -> None:
    page.screenshot(path=str(dash.shots / f"dashboard-{name}.png"), full_page=True)


def cookies_of(page: Any) -> dict[str, str]:
    return {c["name"]: c["value"] for c in page.context.cookies()}


# -- login, sessions, CSRF -------------------------------------------------------------------
@needs_browser
@pytest.mark.spec("O4")
def test_login_through_the_printed_url(page: Any, dash: Dash) -> None:
    assert page.url == dash.page("/apps")
    (cookie,) = [c for c in page.context.cookies() if c["name"].startswith("ketch_dashboard")]
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    assert cookie["path"] == "/dashboard"
    assert page.evaluate("document.cookie") == ""  # out of reach of page scripts


@pytest.mark.spec("O4")
def test_the_login_link_works_once(dash: Dash) -> None:
    url = login_url(dash.home)
    with httpx.Client() as client:
        first = client.get(url)
        assert first.status_code == 200 and "set-cookie" in first.headers
        assert client.get(dash.page("/apps")).status_code == 200
    again = httpx.get(url)
    assert again.status_code == 401 and "set-cookie" not in again.headers
    assert "ketch dashboard" in again.text


@pytest.mark.spec("O4")
def test_logging_out_ends_the_session(dash: Dash) -> None:
    with httpx.Client() as client:
        assert client.get(login_url(dash.home)).status_code == 200
        body = client.get(dash.page("/apps")).text
        csrf = json.loads(html.unescape(re.search(r"hx-headers='([^']*)'", body)[1]))  # type: ignore[index]
        cookies = dict(client.cookies)
        assert client.post(dash.page("/logout")).status_code == 403  # CSRF token needed
        out = client.post(dash.page("/logout"), headers=csrf)
        assert out.status_code == 204 and "Max-Age=0" in out.headers["set-cookie"]
    with httpx.Client(cookies=cookies) as replay:  # the old cookie, sent again
        assert replay.get(dash.page("/apps")).status_code == 401


@pytest.mark.spec("O4")
def test_every_page_answers_401_without_a_session(dash: Dash) -> None:
    from ketch._server.dashboard_auth import DashboardAuth

    paths = [
        "/",
        "/apps",
        f"/apps/{dash.app_id}",
        f"/apps/{dash.app_id}/functions/hello",
        f"/apps/{dash.app_id}/live",
        f"/apps/{dash.app_id}/logs/stream",
        f"/apps/{dash.app_id}/functions/hello/series",
        "/containers",
        "/calls",
        f"/calls/{dash.call_id}",
        "/secrets",
        "/tokens",
        "/volumes",
        "/dicts",
        "/queues",
        "/server",
    ]
    # A cookie another server signed, under this server's cookie name: worth nothing here.
    here = DashboardAuth((dash.home / "token").read_text().strip())
    elsewhere = DashboardAuth("kt-another-server")
    forged = elsewhere.redeem(elsewhere.new_login())
    assert forged is not None and here.session(forged) is None
    for jar in ({}, {here.cookie_name: forged}, {here.cookie_name: "x.1.y"}):
        with httpx.Client(cookies=jar) as client:
            for path in paths:
                resp = client.get(dash.page(path))
                assert resp.status_code == 401, (path, jar, resp.status_code)
                assert dash.secret_value not in resp.text
            stop = client.post(dash.page(f"/apps/{dash.app_id}/stop"))
            assert stop.status_code == 401
    # The login links themselves need the server's token.
    assert httpx.post(f"{dash.api}/v1/dashboard/login").status_code == 401


@needs_browser
@pytest.mark.spec("O4")
def test_a_state_changing_request_without_the_csrf_token_is_refused(page: Any, dash: Dash) -> None:
    jar = cookies_of(page)
    with httpx.Client(cookies=jar) as client:
        for headers in ({}, {"X-CSRF-Token": "0" * 64}):
            for path in (f"/apps/{dash.app_id}/stop", f"/apps/{dash.app_id}/rollback", "/tokens"):
                resp = client.post(dash.page(path), headers=headers)
                assert resp.status_code == 403, (path, headers, resp.status_code)
    row = next(r for r in api("GET", "/v1/apps") if r["app_id"] == dash.app_id)
    assert row["state"] == "deployed" and row["version"] == 2  # nothing changed
    assert httpx.get(dash.url, timeout=60).json() == "v2"


@needs_browser
@pytest.mark.spec("O4")
def test_bad_input_gets_a_clear_answer_and_changes_nothing(page: Any, dash: Dash) -> None:
    page.goto(dash.page("/apps"))
    headers = json.loads(page.get_attribute("body", "hx-headers") or "{}")
    assert set(headers) == {"X-CSRF-Token"}
    vid = next(v["volume_id"] for v in api("GET", "/v1/volumes") if v["name"] == dash.volume)
    app = f"/apps/{dash.app_id}"
    cases = [
        ("GET", "/no-such-page", 404, "no such dashboard page"),
        ("GET", "/apps/ap-nothing-here", 404, "no app"),
        ("GET", f"{app}/functions/nope", 404, "no function 'nope'"),
        ("GET", "/calls/fc-nothing-here", 404, "no call record"),
        ("GET", "/containers/ta-nothing-here", 404, "no container"),
        ("GET", f"/volumes/{vid}?path=../../etc", 400, "may not contain '..'"),
        ("GET", f"/volumes/{vid}?path=/missing", 404, "no such file"),
        ("GET", "/dicts/di-nothing-here", 404, "no dict"),
        ("GET", "/secrets?env=bad%20env", 400, "invalid environment name"),
        ("GET", f"{app}/logs/stream?stream=bogus", 400, "unknown log stream"),
        ("POST", f"{app}/rollback?version=99", 404, "has no version 99"),
        ("POST", f"{app}/rollback?version=two", 400, "whole number"),
        ("POST", f"{app}/rollback?version=2", 400, "already live"),
        ("POST", "/tokens/wk-nothing-here/revoke", 404, "no live proxy token"),
    ]
    before = api("GET", f"/v1/apps/{dash.app_id}/history")["versions"]
    with httpx.Client(cookies=cookies_of(page)) as client:
        for method, path, status, text in cases:
            resp = client.request(method, dash.page(path), headers=headers)
            assert resp.status_code == status, (path, resp.status_code, resp.text[:300])
            assert text in html.unescape(resp.text), (path, resp.text[:300])
            hx = client.request(method, dash.page(path), headers={**headers, "HX-Request": "1"})
            assert hx.status_code == status and text in hx.text  # plain text, for the notice
    assert api("GET", f"/v1/apps/{dash.app_id}/history")["versions"] == before


# -- pages -----------------------------------------------------------------------------------
@needs_browser
@pytest.mark.spec("O4")
def test_the_apps_page_lists_the_deployed_app(page: Any, dash: Dash) -> None:
    page.goto(dash.page("/apps"))
    row = page.locator(f"tr[data-app='{dash.name}']")
    cells = row.locator("td").all_inner_texts()
    assert cells[1] == "deployed" and cells[2] == "main" and cells[3] == "2"
    assert cells[5] == "2"  # functions
    shot(dash, page, "apps")
    from supports import ops_web

    with ops_web.app.run(show_logs=False):
        page.goto(dash.page("/apps"))
        running = page.locator("tr[data-app='ketch-ops-web']").first
        assert running.locator(".badge.ephemeral").count() == 1
        assert "ephemeral" in running.locator("td").nth(1).inner_text()


@needs_browser
@pytest.mark.spec("O4")
def test_the_app_page_shows_the_endpoint_url_and_a_container(page: Any, dash: Dash) -> None:
    assert httpx.get(dash.url, timeout=60).status_code == 200  # a container is up
    page.goto(dash.page(f"/apps/{dash.app_id}"))
    url = page.locator("tr[data-function='hello'] td.url code")
    assert url.inner_text() == dash.url
    url.click()
    page.locator("tr[data-function='hello'] td.url code.copied").wait_for(timeout=5000)
    assert page.evaluate("navigator.clipboard.readText()") == dash.url
    containers = page.locator("#app-live table").nth(1)
    containers.locator("td", has_text="hello").first.wait_for(timeout=30_000)
    assert page.locator("#history-table tbody tr").count() == 2
    shot(dash, page, "app")


@needs_browser
@pytest.mark.spec("O4")
def test_a_printed_log_line_shows_in_the_live_view_within_2_s(page: Any, dash: Dash) -> None:
    page.goto(dash.page(f"/apps/{dash.app_id}"))
    page.locator("#logs .log-line").first.wait_for(timeout=10_000)  # the stream is open
    marker = uuid.uuid4().hex[:10]
    assert httpx.get(dash.url, params={"msg": marker}, timeout=60).status_code == 200
    # The product's bound: printed in the container, on screen 2 s later, with no reload.
    page.get_by_text(f"hello printed {marker}").wait_for(timeout=2000)
    page.get_by_text(f"hello stderr {marker}").wait_for(timeout=2000)
    # Only stderr: a new stream replaces the old one, and stdout lines stay out of it.
    page.uncheck("#log-stdout")
    page.uncheck("#log-system")
    page.wait_for_function(
        "!document.querySelector('#logs') || "
        "document.querySelector('#logs').getAttribute('sse-connect')"
        ".includes('stream=stderr')"
    )
    page.get_by_text(f"hello stderr {marker}").wait_for(timeout=5000)  # the stored tail
    second = uuid.uuid4().hex[:10]
    assert httpx.get(dash.url, params={"msg": second}, timeout=60).status_code == 200
    page.get_by_text(f"hello stderr {second}").wait_for(timeout=2000)
    assert page.get_by_text(f"hello printed {second}").count() == 0
    assert page.get_by_text(f"hello printed {marker}").count() == 0
    page.check("#log-stdout")
    page.check("#log-system")


@needs_browser
@pytest.mark.spec("O4")
def test_the_function_page_draws_charts_after_traffic(page: Any, dash: Dash) -> None:
    with httpx.Client(timeout=60) as client:
        for i in range(5):
            assert client.get(dash.url, params={"msg": f"chart-{i}"}).status_code == 200
    page.goto(dash.page(f"/apps/{dash.app_id}/functions/hello"))
    for chart in ("#chart-rate", "#chart-latency"):
        page.wait_for_function(
            f"Number(document.querySelector('{chart}').dataset.points) > 0", timeout=30_000
        )
        assert page.locator(f"{chart} canvas").count() == 1
    data = page.evaluate(
        "fetch(document.querySelector('#chart-rate').dataset.src).then(r => r.json())"
    )
    assert any(v > 0 for v in data["web"]) and any(v is not None for v in data["p50"])
    shot(dash, page, "function")


@needs_browser
@pytest.mark.spec("O4")
def test_call_pages_show_the_error_and_traceback(page: Any, dash: Dash) -> None:
    page.goto(dash.page("/calls"))
    page.click(f"a[href$='/calls/{dash.call_id}']")
    page.wait_for_url(f"**/calls/{dash.call_id}")
    assert "negative input -1" in page.locator("p.error").inner_text()
    tb = page.locator("pre.traceback").inner_text()
    assert "Traceback" in tb and "ValueError" in tb
    shot(dash, page, "call")


@needs_browser
@pytest.mark.spec("O4")
def test_secrets_volumes_and_dicts_pages(page: Any, dash: Dash) -> None:
    page.goto(dash.page("/secrets"))
    row = page.locator(f"tr[data-secret='{dash.secret_name}']")
    assert "API_TOKEN" in row.inner_text()
    page.goto(dash.page("/volumes"))
    page.click(f"text={dash.volume}")
    page.click("text=docs/")
    page.locator("td", has_text="notes.txt").wait_for()
    page.goto(dash.page("/dicts"))
    page.click(f"text={dash.dict_name}")
    keys = page.locator("table tbody").inner_text()
    assert "'greeting'" in keys and "42" in keys and "hello" not in keys  # keys, no values


@needs_browser
@pytest.mark.spec("O4")
def test_tables_sort_by_any_column(page: Any, dash: Dash) -> None:
    page.goto(dash.page(f"/apps/{dash.app_id}"))
    versions = page.locator("#history-table tbody tr td:first-child")
    assert versions.all_inner_texts() == ["2", "1"]
    header = page.locator("#history-table th", has_text="version")
    header.click()
    assert versions.all_inner_texts() == ["1", "2"]
    header.click()
    assert versions.all_inner_texts() == ["2", "1"]


@needs_browser
@pytest.mark.spec("O4")
def test_a_token_secret_is_shown_once_and_revoke_works(page: Any, dash: Dash) -> None:
    page.goto(dash.page("/tokens"))
    page.click("#create-token")
    created = page.locator("#new-token")
    created.wait_for()
    secret = created.locator("code.secret").inner_text()
    token_id = created.locator("code").first.inner_text()
    assert secret.startswith("ws-") and token_id.startswith("wk-")
    page.reload()
    assert secret not in page.content()
    page.once("dialog", lambda d: d.accept())
    page.click(f"tr[data-token='{token_id}'] button.revoke")
    page.wait_for_url("**/tokens?done=revoke")
    assert "revoked" in page.locator(f"tr[data-token='{token_id}']").inner_text()
    rows = api("GET", "/v1/tokens")
    assert next(r for r in rows if r["token_id"] == token_id)["revoked"] is not None


@needs_browser
@pytest.mark.spec("O4")
def test_rollback_from_the_history_changes_what_the_endpoint_returns(page: Any, dash: Dash) -> None:
    page.goto(dash.page(f"/apps/{dash.app_id}"))
    button = page.locator("#history-table tr[data-version='1'] button.rollback")
    page.once("dialog", lambda d: d.dismiss())  # confirm first: "cancel" changes nothing
    button.click()
    time.sleep(0.5)
    assert api("GET", f"/v1/apps/{dash.app_id}/history")["versions"][-1]["version"] == 2
    page.once("dialog", lambda d: d.accept())
    button.click()
    page.wait_for_url("**done=rollback", timeout=60_000)
    assert "Rolled back" in page.locator("#notice").inner_text()
    live = page.locator("#history-table tr[data-version='3']")
    assert "rollback of 1" in live.inner_text() and "live" in live.inner_text()
    wait_for(
        lambda: httpx.get(dash.url, timeout=60).json() == "v1",
        timeout=60,
        what="the endpoint to answer with version 1's code",
    )


PAGES = [
    "/apps",
    "/apps?all=1",
    "/apps/{app_id}",
    "/apps/{app_id}/functions/hello",
    "/apps/{app_id}/functions/work",
    "/containers",
    "/calls",
    "/calls/{call_id}",
    "/secrets",
    "/tokens",
    "/volumes",
    "/dicts",
    "/queues",
    "/server",
]


@needs_browser
@pytest.mark.spec("O4")
def test_pages_fit_a_phone_and_follow_dark_mode(browser: Any, page: Any, dash: Dash) -> None:
    phone = browser.new_context(
        viewport={"width": 390, "height": 844}, color_scheme="dark", is_mobile=True, has_touch=True
    )
    try:
        phone.add_cookies(
            [{"name": k, "value": v, "url": dash.page("/")} for k, v in cookies_of(page).items()]
        )
        pg = phone.new_page()
        for path in PAGES:
            pg.goto(dash.page(path.format(app_id=dash.app_id, call_id=dash.call_id)))
            assert pg.title().endswith("ketch dashboard")
            # Wide tables scroll inside their frame; the page itself never scrolls sideways.
            overflow = pg.evaluate(
                "document.documentElement.scrollWidth - document.documentElement.clientWidth"
            )
            assert overflow <= 1, (path, overflow)
            bg = pg.evaluate("getComputedStyle(document.body).backgroundColor")
            assert _luminance(bg) < 0.2, (path, bg)
        pg.goto(dash.page(f"/apps/{dash.app_id}"))
        pg.screenshot(path=str(dash.shots / "dashboard-app-phone-dark.png"), full_page=True)
    finally:
        phone.close()
    page.goto(dash.page("/apps"))
    assert _luminance(page.evaluate("getComputedStyle(document.body).backgroundColor")) > 0.8


def _luminance(css: str) -> float:
    r, g, b = (int(x) for x in re.findall(r"\d+", css)[:3])
    return (0.2126 * r + 0.7152 * g + 0.0722 * b) / 255


@needs_browser
@pytest.mark.spec("O4")
def test_no_secret_value_in_any_dashboard_response(page: Any, dash: Dash) -> None:
    # Every page once more, and every link on them, while recording.
    seen: set[str] = set()
    queue = [dash.page(p.format(app_id=dash.app_id, call_id=dash.call_id)) for p in PAGES]
    while queue and len(seen) < 80:
        url = queue.pop(0)
        if url in seen:
            continue
        seen.add(url)
        page.goto(url)
        # One screenshot per kind of page: ids become the kind's name.
        kind = re.sub(r"\b([a-z]{2})-[a-z0-9]{20}\b", r"\1", url.split("/dashboard", 1)[1])
        name = re.sub(r"[^a-z0-9]+", "-", kind).strip("-") or "index"
        if not (dash.shots / f"dashboard-{name}.png").exists():
            shot(dash, page, name)
        for href in page.eval_on_selector_all(
            "a[href^='/dashboard/']", "els => els.map(e => e.href)"
        ):
            if href not in seen and "/logout" not in href:
                queue.append(href)
    # The log stream: what the browser's EventSource gets, read for a moment.
    with (
        httpx.Client(cookies=cookies_of(page)) as client,
        client.stream("GET", dash.page(f"/apps/{dash.app_id}/logs/stream")) as resp,
    ):
        assert resp.status_code == 200
        chunk = b""
        for part in resp.iter_bytes():
            chunk += part
            if b"hello printed" in chunk:
                break
    dash.bodies.append(("log stream", chunk))
    assert len(dash.bodies) > 40
    assert any(b"API_TOKEN" in body for _, body in dash.bodies)  # the key is shown...
    leaks = [url for url, body in dash.bodies if dash.secret_value.encode() in body]
    assert not leaks, leaks  # ...its value never
    # The 4xx answers of the bad-input test are the only errors the pages may have logged.
    unexpected = [e for e in dash.console_errors if "status of 4" not in e]
    assert not unexpected, unexpected


@needs_browser
@pytest.mark.spec("O4")
def test_stop_stops_the_app(page: Any, dash: Dash) -> None:
    page.goto(dash.page(f"/apps/{dash.app_id}"))
    page.once("dialog", lambda d: d.accept())
    page.click("#stop-app")
    page.wait_for_url("**done=stop")
    assert "stopped" in page.locator("h1 .badge").first.inner_text()
    row = next(r for r in api("GET", "/v1/apps") if r["app_id"] == dash.app_id)
    assert row["state"] == "stopped"
    wait_for(
        lambda: httpx.get(dash.url, timeout=10).status_code == 503,
        timeout=30,
        what="the stopped app's endpoint to say it is stopped",
    )
    assert "stopped" in httpx.get(dash.url, timeout=10).text
    page.goto(dash.page("/apps"))
    assert page.locator(f"tr[data-app='{dash.name}']").count() == 0
    page.goto(dash.page("/apps?all=1"))
    assert "stopped" in page.locator(f"tr[data-app='{dash.name}']").first.inner_text()
