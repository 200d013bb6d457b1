"""A burst against an endpoint scaled to zero (S1, S2, S3): 300 requests at concurrency 60,
`@concurrent(max_inputs=10)`, `max_containers=8`. Every request succeeds, the pool never
holds more than 8 containers, the queue stays bounded by the requests in flight, and the
pool goes back to zero after its 2 s scale-down window. The server gets a rate limit high
enough that the token bucket is not what is tested."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from ketch._client.deploy import ApiClient
from supports import burst
from supports.web_helpers import wait_for

REQUESTS = 300
CONCURRENCY = 60


@pytest.fixture
def unthrottled(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KETCH_RATE_LIMIT", "100000")
    monkeypatch.setenv("KETCH_RATE_BURST", "100000")


@pytest.fixture
def burst_server(unthrottled: None, fresh_server: Any) -> Iterator[Any]:
    yield fresh_server


async def _status(api: ApiClient, app_id: str) -> dict[str, Any]:
    out = await api.call("GET", f"/v1/apps/{app_id}/status")
    hello: dict[str, Any] = out["functions"]["hello"]
    return hello


async def _burst(url: str, app_id: str) -> tuple[list[httpx.Response], list[dict[str, Any]]]:
    api = ApiClient()
    samples: list[dict[str, Any]] = []
    done = asyncio.Event()

    async def sample() -> None:
        while not done.is_set():
            samples.append(await _status(api, app_id))
            await asyncio.sleep(0.05)

    limits = httpx.Limits(max_connections=CONCURRENCY, max_keepalive_connections=CONCURRENCY)
    gate = asyncio.Semaphore(CONCURRENCY)
    async with httpx.AsyncClient(limits=limits, timeout=120) as client:

        async def one(i: int) -> httpx.Response:
            async with gate:
                return await client.get(url, params={"i": i})

        sampler = asyncio.ensure_future(sample())
        try:
            responses = await asyncio.gather(*(one(i) for i in range(REQUESTS)))
        finally:
            done.set()
            await sampler
    return list(responses), samples


@pytest.mark.spec("S1", "S2", "S3")
def test_burst_on_a_pool_scaled_to_zero(burst_server: Any) -> None:
    with burst.app.run(show_logs=False):
        app_id = burst.app.app_id
        url = burst.hello.get_web_url()
        assert app_id is not None and url is not None
        api = ApiClient()

        def total() -> int:
            from ketch._utils.aio import run_sync

            return sum(run_sync(_status(api, app_id))["containers"].values())

        assert total() == 0  # scaled to zero before the burst
        responses, samples = asyncio.run(_burst(url, app_id))
        assert [r.status_code for r in responses] == [200] * REQUESTS
        assert [r.json()["i"] for r in responses] == list(range(REQUESTS))
        peak = max(sum(s["containers"].values()) for s in samples)
        assert 1 <= peak <= 8, peak
        assert max(s["queued"] for s in samples) <= CONCURRENCY
        assert len({r.json()["pid"] for r in responses}) <= 8
        # Back to zero once the 2 s window has passed with no traffic.
        assert wait_for(lambda: total() == 0, 60)
