"""Request smuggling against the real gateway (W15, W17): a corpus of raw-socket attacks on a
`requires_proxy_auth` endpoint whose handler records every request it sees.

Each attack carries valid credentials on the requests the gateway may forward and none on
the ones it must not ("/smuggled?..."). After each: no smuggled request reached any handler,
every response on every connection names a request sent on that connection (none crossed),
and other clients' requests right after still get their own answers.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from supports import gateway_guarded as g
from supports.gateway_site import Site, running_site
from supports.raw_http import Reply, exchange, request, websocket_upgrade
from supports.smuggling_corpus import ATTACKS, MIXING, next_id, ok_request
from supports.web_helpers import wait_for

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def site(ketch_server: Any) -> Iterator[Site]:
    log = ketch_server.home / "server.log"
    log_from = log.stat().st_size
    with running_site(ketch_server) as site:
        yield site
    # Whatever the corpus did, the server handled it without an error of its own.
    written = log.read_bytes()[log_from:].decode(errors="replace")
    assert "Traceback" not in written, written[written.index("Traceback") - 2000 :][:6000]


GUARDED = ["guarded", "guarded_server"]

# -- checks -------------------------------------------------------------------------------


def _named(reply: Reply) -> list[str]:
    """The request ids that the handlers' responses on this connection name."""
    names = []
    for r in reply.responses:
        if r.status == 200 and not r.text.startswith("ketch:"):
            names.append(r.text.rsplit("id=", 1)[-1])
    return names


def _victims(port: int, host: str, creds: dict[str, str]) -> None:
    """Other clients, right after an attack: each gets its own responses, in order."""
    for _ in range(2):
        first, a = ok_request(host, creds, "v")
        second, b = ok_request(host, creds, "v", Connection="close")
        reply = exchange(port, first + second, want=2)
        assert reply.statuses == [200, 200], reply
        assert _named(reply) == [a, b], reply


def _barrier(site: Site) -> None:
    """A last request on a connection of its own: once the handler saw it, it also saw
    whatever an attack sent before."""
    port, host = site.address("guarded", "port")
    data, rid = ok_request(host, site.creds, "barrier", Connection="close")
    assert exchange(port, data, want=1).statuses == [200]
    wait_for(
        lambda: any(rid in r["request"] for r in g.records(site.app_id)),
        interval=0.01,
        what="the barrier request in the handler's record",
    )


def _assert_nothing_smuggled(site: Site, since: int) -> None:
    """Checks what the guarded handlers saw after the first `since` records."""
    seen = [r for r in g.records(site.app_id)[since:] if r["fn"] in GUARDED]
    smuggled = [r["request"] for r in seen if "smuggled" in r["request"]]
    assert smuggled == [], f"requests without credentials reached the guarded handler: {smuggled}"
    leaked = [r for r in seen if {"ketch-key", "ketch-secret"} & set(r["headers"])]
    assert leaked == [], "credentials reached user code (W15)"


# Every attack on both guarded servers through their own ports; those that mix requests on
# one connection also through the main port, where Host picks the endpoint per request.
CASES = [
    *((attack, fn, "port") for attack in ATTACKS for fn in GUARDED),
    *((a.__name__, fn, "host") for a in MIXING for fn in GUARDED),
]


@pytest.mark.spec("W15", "W17")
@pytest.mark.parametrize(("attack", "fn", "route"), CASES)
def test_smuggling_corpus(site: Site, attack: str, fn: str, route: str) -> None:
    port, host = site.address(fn, route)
    since = len(g.records(site.app_id))
    data, allowed = ATTACKS[attack](host, site.creds)
    # A last request that ends the connection, unless the gateway ended it before.
    closer, rid = ok_request(host, site.creds, "closer", Connection="close")
    if isinstance(data, bytes):
        data += closer
    else:
        data = [*data, closer]
    reply = exchange(port, data, timeout=10)
    allowed = allowed | {rid}
    named = _named(reply)
    assert set(named) <= allowed, f"responses to requests not sent here: {named}"
    assert len(named) == len(set(named)), f"a response came twice: {named}"
    if not reply.upgraded:
        # Whatever the gateway does not serve, it refuses (4xx, or 501/505 for what it does
        # not implement, with a ketch body) or closes. The app's own answers: a response
        # naming its request, or the 403 of a handshake it refused.
        for r in reply.responses:
            if r.text.startswith("ketch:"):
                assert r.status < 500 or r.status in (501, 505), r
            else:
                assert r.status in (200, 403), r
        assert reply.garbage == b"", reply
    _victims(port, host, site.creds)
    _barrier(site)
    _assert_nothing_smuggled(site, since)


@pytest.mark.spec("W15")
@pytest.mark.parametrize("fn", ["open_ws", "plain"])
def test_upgrade_smuggling_on_public_endpoints_crosses_nothing(site: Site, fn: str) -> None:
    """A public endpoint may serve anyone, but bytes after a refused or accepted handshake
    are still not requests, and no response reaches another client."""
    port, host = site.address(fn, "port")
    since = len(g.records(site.app_id))
    for path in ("/nows", "/ws"):
        rid = f"pub-{next_id()}"
        leftover = request("GET", f"/smuggled?id=pub-{next_id()}", host)
        reply = exchange(port, websocket_upgrade(f"{path}?id={rid}", host) + leftover)
        assert set(_named(reply)) <= {rid}, reply
        _victims(port, host, {})
    _barrier(site)
    leaked = [
        r["request"]
        for r in g.records(site.app_id)[since:]
        if r["fn"] == fn and "smuggled" in r["request"]
    ]
    assert leaked == [], leaked


@pytest.mark.spec("W15")
@pytest.mark.parametrize(
    "header", ["Authorization", "Ketch-Key", "Ketch-Secret", "Modal-Key", "Modal-Secret"]
)
def test_non_ascii_credentials_get_401(site: Site, header: str) -> None:
    port, host = site.address("guarded", "port")
    since = len(g.records(site.app_id))
    rid = f"na-{next_id()}"
    key = site.creds["Ketch-Key"]
    for value in (
        "Bearer wk-\xe9t\xe9.ws-\xff",
        f"Bearer {key}.ws-\xff",
        "\xe9\xff\x80",
        "wk-" + "\xe9" * 200,
    ):
        headers = {header: value}
        if header.endswith("Key"):
            headers[header.replace("Key", "Secret")] = "ws-\xe9"
        elif header.endswith("Secret"):
            headers[header.replace("Secret", "Key")] = key  # a real key, a bad secret
        reply = exchange(
            port,
            request("GET", f"/smuggled?id={rid}", host, headers={**headers, "Connection": "close"}),
            want=1,
        )
        assert reply.statuses == [401], reply
        assert reply.responses[0].text.startswith("ketch:")
    # UTF-8 bytes, as a browser would send them.
    raw = request("GET", f"/smuggled?id={rid}", host, headers={"Connection": "close"})
    raw = raw.replace(
        b"\r\n\r\n", f"\r\n{header}: ".encode() + "Bearer wk-é.ws-ü".encode() + b"\r\n\r\n", 1
    )
    reply = exchange(port, raw, want=1)
    assert reply.statuses == [401], reply
    _barrier(site)
    _assert_nothing_smuggled(site, since)
