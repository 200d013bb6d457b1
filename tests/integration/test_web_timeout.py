"""A web request whose handler passes the function timeout ends with a 5xx (T4)."""

from __future__ import annotations

import httpx
import pytest

from supports.web_timeout import app, slow


@pytest.mark.spec("T4")
def test_handler_past_timeout_gets_5xx_then_the_endpoint_recovers(server: object) -> None:
    with app.run(show_logs=False):
        url = slow.get_web_url()
        assert url is not None
        resp = httpx.get(url, params={"seconds": 30}, timeout=25)
        assert resp.status_code >= 500 and resp.text.startswith("ketch:")
        # A fresh container serves the next request.
        ok = httpx.get(url, params={"seconds": 0}, timeout=60)
        assert ok.status_code == 200 and ok.json() == {"done": "yes"}
