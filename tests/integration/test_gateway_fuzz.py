"""The gateway fuzzed over raw sockets (W17, W15), on a server of its own: at least 10,000
seeded inputs per run, from a mutator over a corpus (the smuggling corpus and well-formed
requests of every kind) and from Hypothesis strategies that build requests from parts.

Every answer must be a refusal the gateway may give (4xx, 501, 505, with a `ketch:` body)
or an app's answer; never a 5xx from the gateway, never bytes that are no response, never a
request the container's server cannot parse. A request without credentials never reaches a
guarded handler. After the run, each endpoint serves a normal request, and the server's log
holds no traceback.

    KETCH_GATEWAY_FUZZ_SEED=7 KETCH_GATEWAY_FUZZ_INPUTS=20000 \
        pytest tests/integration/test_gateway_fuzz.py

scripts/gateway_fuzz.py is the long variant, run by hand.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st

from supports import gateway_guarded as g
from supports.gateway_fuzz import (
    FUNCTIONS,
    GUARDED,
    Input,
    Outcome,
    judge,
    mutated,
    raw_requests,
    run_async,
)
from supports.gateway_site import Site, running_site
from supports.raw_http import Reply, Response, exchange, request

SEED = int(os.environ.get("KETCH_GATEWAY_FUZZ_SEED", "1109"))
INPUTS = int(os.environ.get("KETCH_GATEWAY_FUZZ_INPUTS", "10000"))
BATCH = 25  # Hypothesis inputs per example, sent at once
HYPOTHESIS_SHARE = 0.2

pytestmark = pytest.mark.timeout(max(600, INPUTS // 50))


@pytest.fixture(scope="module")
def fuzz_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    # The rate limit would turn most of the run into 429s; the run is about parsing.
    previous = os.environ.get("KETCH_RATE_LIMIT")
    os.environ["KETCH_RATE_LIMIT"] = "1000000"
    yield
    if previous is None:
        os.environ.pop("KETCH_RATE_LIMIT", None)
    else:
        os.environ["KETCH_RATE_LIMIT"] = previous


@pytest.fixture
def site(fuzz_home: None, fresh_server: Any) -> Iterator[Site]:
    with running_site(fresh_server) as site:
        yield site


def _report(outcome: Outcome) -> str:
    lines = [f"{len(outcome.violations)} of {outcome.sent} inputs broke a rule:"]
    for why, inp, reply in outcome.violations[:10]:
        lines.append(f"- {why}: port {inp.port}, pieces {inp.pieces!r}\n  got {reply!r}"[:1500])
    return "\n".join(lines)


def _healthy_after(site: Site, server: Any, log_from: int, records_from: int) -> None:
    for fn in FUNCTIONS:
        port, host = site.address(fn, "port")
        creds = {**site.creds, "Connection": "close"}
        reply = exchange(port, request("GET", "/ok?id=after", host, headers=creds), want=1)
        assert reply.statuses == [200], (fn, reply)
        assert reply.responses[0].text == f"{fn} GET /ok?id=after"
    log = (server.home / "server.log").read_bytes()[log_from:].decode(errors="replace")
    assert "Traceback" not in log, log[log.index("Traceback") - 2000 :][:6000]
    smuggled = [
        r["request"]
        for r in g.records(site.app_id)[records_from:]
        if r["fn"] in GUARDED and "smuggled" in r["request"]
    ]
    assert smuggled == [], f"requests without credentials reached guarded handlers: {smuggled}"


@pytest.mark.spec("W17", "W15")
def test_gateway_fuzz(site: Site, fresh_server: Any) -> None:
    log_from = (fresh_server.home / "server.log").stat().st_size
    records_from = len(g.records(site.app_id))
    hypothesis_examples = max(1, int(INPUTS * HYPOTHESIS_SHARE) // BATCH)
    outcome = Outcome()

    @seed(SEED)
    @settings(
        max_examples=hypothesis_examples,
        deadline=None,
        database=None,
        derandomize=False,
        suppress_health_check=list(HealthCheck),
        phases=[Phase.generate],
    )
    @given(st.data())
    def hypothesis_inputs(data: st.DataObject) -> None:
        batch = data.draw(st.lists(raw_requests(site), min_size=BATCH, max_size=BATCH))
        part = asyncio.run(run_async(batch, concurrency=BATCH, idle=0.3))
        outcome.add(part)

    started = time.monotonic()
    hypothesis_inputs()
    mutations = INPUTS - outcome.sent
    outcome.add(asyncio.run(run_async(mutated(site, SEED, mutations), concurrency=64, idle=0.3)))
    elapsed = time.monotonic() - started
    print(
        f"gateway fuzz: seed {SEED}, {outcome.sent} inputs in {elapsed:.1f}s "
        f"({outcome.sent / elapsed:.0f}/s), {outcome.closed} closed by the gateway, "
        f"{outcome.upgraded} upgraded, statuses {sorted(outcome.statuses.items())}"
    )
    assert outcome.sent >= INPUTS
    assert outcome.violations == [], _report(outcome)
    # The run reached the containers, not only the gateway's refusals.
    assert outcome.statuses[200] > INPUTS // 20, outcome.statuses
    assert outcome.statuses[400] > INPUTS // 20, outcome.statuses
    _healthy_after(site, fresh_server, log_from, records_from)


def test_the_rules_can_fail() -> None:
    """A 5xx from the gateway, garbage, and a request the container could not parse are
    each caught; a refusal and an app's answer are not."""
    outcome = Outcome()
    inp = Input(0, [b"x"])
    judge(inp, Reply(responses=[Response(502, [], b"ketch: oops")]), outcome)
    judge(inp, Reply(garbage=b"junk"), outcome)
    judge(inp, Reply(responses=[Response(400, [], b"Invalid HTTP request received.")]), outcome)
    judge(inp, Reply(responses=[Response(400, [], b"ketch: malformed request")]), outcome)
    judge(inp, Reply(responses=[Response(200, [], b"plain GET /?")]), outcome)
    assert [why for why, _, _ in outcome.violations] == [
        "the gateway answered 502",
        "bytes that are no HTTP response",
        "the gateway forwarded a malformed request",
    ]
