"""`ketch serve` as a user runs it (W6): a real CLI process serving an app file from a
temporary directory, edited while it runs; requests over real HTTP.
"""

from __future__ import annotations

import signal
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from cli_support import write

from supports.web_helpers import Cli, cli, runtime_pids, wait_for

APP = """
    import ketch

    import served_helper

    app = ketch.App("{name}", image=ketch.Image.debian_slim().add_local_python_source(
        "served_helper"))


    @app.function()
    @ketch.fastapi_endpoint()
    def hello() -> str:
        return "{version} " + served_helper.WORD


    @app.function()
    @ketch.fastapi_endpoint()
    def slow(seconds: float = 0.0) -> str:
        import time

        time.sleep(seconds)
        return "slow {version}"
"""

URL_LINE = r"^\s+{tag}\s+(http://127\.0\.0\.1:\d+)$"
SERVING = r"^Serving app '(?P<name>[^']+)' \((?P<app_id>ap-\w+)\)"


def make_app(directory: Path, name: str, version: str, word: str = "alpha") -> Path:
    write(directory / "served_helper.py", f'WORD = "{word}"\n')
    return write(directory / "served_app.py", APP.format(name=name, version=version))


def started(proc: Cli) -> tuple[str, dict[str, str]]:
    """The app id and the endpoint URLs `ketch serve` printed."""
    app_id = proc.wait_for_line(SERVING)["app_id"]
    urls = {tag: proc.wait_for_line(URL_LINE.format(tag=tag)).group(1) for tag in ("hello", "slow")}
    return app_id, urls


def poll_text(url: str, want: str, timeout: float = 15.0) -> float:
    """Seconds until GET `url` answers `want` (JSON-encoded text)."""
    begin = time.monotonic()

    def answered() -> bool:
        try:
            return httpx.get(url, timeout=10).json() == want
        except (httpx.HTTPError, ValueError):
            return False

    wait_for(answered, timeout=timeout, interval=0.05, what=f"{url} to answer {want!r}")
    return time.monotonic() - begin


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new))


@pytest.mark.spec("W6")
def test_serve_reloads_edits_drains_and_stops_on_ctrl_c(ketch_server: Any, tmp_path: Path) -> None:
    name = f"served-{uuid.uuid4().hex[:8]}"
    app_file = make_app(tmp_path, name, "v1")
    with cli(ketch_server.home, "serve", str(app_file), cwd=tmp_path) as proc:
        app_id, urls = started(proc)
        assert httpx.get(urls["hello"], timeout=60).json() == "v1 alpha"
        assert httpx.get(urls["slow"], timeout=60).json() == "slow v1"  # warm

        # A request in flight while the app reloads finishes on the old container.
        in_flight: dict[str, Any] = {}

        def slow_request() -> None:
            r = httpx.get(urls["slow"], params={"seconds": 3}, timeout=60)
            in_flight["status"], in_flight["body"] = r.status_code, r.json()

        caller = threading.Thread(target=slow_request, daemon=True)
        caller.start()
        time.sleep(0.5)

        edit(app_file, '"v1 "', '"v2 "')
        edit(app_file, '"slow v1"', '"slow v2"')
        took = poll_text(urls["hello"], "v2 alpha")
        assert took < 5, f"the edit took {took:.1f}s to go live"
        caller.join(30)
        assert in_flight == {"status": 200, "body": "slow v1"}
        assert httpx.get(urls["slow"], timeout=60).json() == "slow v2"

        # An edit to a local module the app imports is live too.
        (tmp_path / "served_helper.py").write_text('WORD = "beta"\n')
        took = poll_text(urls["hello"], "v2 beta")
        assert took < 5, f"the helper edit took {took:.1f}s to go live"
        assert "Reloaded" in proc.output

        assert runtime_pids(app_id)
        proc.signal(signal.SIGINT)
        assert proc.wait(30) == 0, proc.output
    wait_for(lambda: not runtime_pids(app_id), timeout=20, what="the app's containers to stop")
    gone = httpx.get(urls["hello"], timeout=30)
    assert gone.status_code == 503 and gone.text.startswith("ketch:")


@pytest.mark.spec("W6")
def test_second_serve_takes_the_label_over_and_timeout_stops_it(
    ketch_server: Any, tmp_path: Path
) -> None:
    name = f"served-{uuid.uuid4().hex[:8]}"
    first_file = make_app(tmp_path / "first", name, "first")
    second_file = make_app(tmp_path / "second", name, "second")
    with cli(ketch_server.home, "serve", str(first_file), cwd=tmp_path / "first") as first:
        first_id, urls = started(first)
        assert httpx.get(urls["hello"], timeout=60).json() == "first alpha"
        assert runtime_pids(first_id)
        with cli(
            ketch_server.home, "serve", "--timeout", "8", str(second_file), cwd=tmp_path / "second"
        ) as second:
            second_id, second_urls = started(second)
            assert second_id != first_id
            assert second_urls == urls  # the same label, so the same URLs
            # The first one is told, stops, and its containers go.
            first.wait_for_line(r"took its URLs over", timeout=30)
            assert first.wait(30) == 0, first.output
            wait_for(
                lambda: not runtime_pids(first_id),
                timeout=20,
                what="the first serve's containers to stop",
            )
            assert httpx.get(urls["hello"], timeout=60).json() == "second alpha"
            assert runtime_pids(second_id)
            # --timeout ends the second one by itself, with its containers.
            assert second.wait(30) == 0, second.output
            assert "--timeout" in second.output
    wait_for(
        lambda: not runtime_pids(second_id),
        timeout=20,
        what="the second serve's containers to stop",
    )
