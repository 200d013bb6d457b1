"""Prometheus metrics at /metrics move by the right amounts (O2)."""

from __future__ import annotations

import re

import httpx
import pytest

from supports.basic import app, fail, square


def _scrape(server) -> dict[str, float]:  # type: ignore[no-untyped-def]
    text = httpx.get(f"http://127.0.0.1:{server.info()['api_port']}/metrics").text
    values: dict[str, float] = {}
    for line in text.splitlines():
        match = re.match(r"^(ketch_[a-z_]+(?:\{[^}]*\})?) ([0-9.e+-]+)$", line)
        if match:
            values[match.group(1)] = float(match.group(2))
    return values


@pytest.mark.spec("O2")
def test_counters_move_with_traffic(server) -> None:  # type: ignore[no-untyped-def]
    with app.run(show_logs=False):
        square.remote(1)  # a warm container: the rest costs no cold start
        before = _scrape(server)
        assert [square.remote(i) for i in range(3)] == [0, 1, 4]
        with pytest.raises(ValueError):
            fail.remote("value")
        after = _scrape(server)
    assert after["ketch_inputs_total"] - before["ketch_inputs_total"] == 4
    assert after["ketch_cold_starts_total"] - before["ketch_cold_starts_total"] == 1
    assert 'ketch_containers{function="square",state="ready"}' in after
