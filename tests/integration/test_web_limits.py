"""The per-workspace rate limit (W13) on a server of its own, configured with a tiny
bucket: the burst passes, the excess gets 429 with Retry-After and starts nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from supports import web_apps
from supports.web_helpers import cold_starts, containers

BURST = 3


@pytest.fixture
def rate_limited(monkeypatch: pytest.MonkeyPatch) -> None:
    # Read by the server that `fresh_server` starts next: one token per minute, 3 at once.
    monkeypatch.setenv("KETCH_RATE_LIMIT", str(1 / 60))
    monkeypatch.setenv("KETCH_RATE_BURST", str(BURST))


@pytest.fixture
def limited_server(rate_limited: None, fresh_server: Any) -> Iterator[Any]:
    yield fresh_server


@pytest.mark.spec("W13")
def test_excess_requests_get_429_and_start_nothing(limited_server: Any) -> None:
    with web_apps.app.run(show_logs=False):
        app_id = web_apps.app.app_id
        assert app_id is not None
        sleeper, pinger = web_apps.wsgi_sleeper.get_web_url(), web_apps.sockets.get_web_url()
        assert sleeper is not None and pinger is not None
        with httpx.Client(timeout=60) as client:
            for _ in range(BURST):
                assert client.get(sleeper).status_code == 200
            refused = client.get(sleeper)
            assert refused.status_code == 429
            assert refused.text.startswith("ketch:")
            assert int(refused.headers["retry-after"]) >= 1
            # The bucket is the workspace's: another endpoint is refused too, and the
            # refused request starts no container for it.
            starts = cold_starts()
            other = client.get(pinger)
            assert other.status_code == 429 and "retry-after" in other.headers
            assert containers(app_id, "sockets") == []
            assert cold_starts() == starts
