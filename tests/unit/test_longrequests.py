"""The long-request store (W14) on its own: result URL parsing, kept responses replayed
with the gateway's framing, expiry after the retention, and the byte bound."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from ketch._gateway.exchange import Exchange
from ketch._gateway.http import Limits
from ketch._gateway.longrequests import RECORD_COST, LongRequests, owner_of, result_id
from ketch._gateway.resolver import Denied, Ready, RequestHead


class _Client:
    """The client connection an exchange starts with; a detached one no longer uses it."""

    transport: Any = None
    write_paused = False

    def pause(self, reason: int) -> None: ...
    def resume(self, reason: int) -> None: ...
    def enter_tunnel(self, upstream: Any) -> None: ...
    def close(self) -> None: ...
    def exchange_ended(self, ex: Exchange, outcome: str) -> None:
        raise AssertionError("a detached exchange must not report to its old client")


class _Target:
    address = "unix:/nowhere"
    remove_headers: frozenset[bytes] = frozenset()

    def __init__(self) -> None:
        self.released: list[str] = []

    def release(self, outcome: str) -> None:
        self.released.append(outcome)


def _head(method: str = "GET", target: str = "/slow?x=1") -> RequestHead:
    return RequestHead(method, target, [], "127.0.0.1", 4000, ("127.0.0.1", 1), False)


def _detached(store: LongRequests) -> tuple[Exchange, str, _Target]:
    ex = Exchange(
        _Client(),
        b"GET",
        b"/slow?x=1",
        http10=True,
        keep_alive=False,
        chunked=False,
        has_body=False,
        websocket=False,
    )
    ex.head = _head()
    ex.body_done = True
    target = _Target()
    ex.destination = target
    call_id = store.detach(ex, owner_of(ex.head))
    assert call_id is not None
    return ex, call_id, target


def _answer(store: LongRequests, call_id: str, **kw: Any) -> Ready | Denied:
    head = _head(**kw)
    head.target = f"/slow?x=1&__ketch_call_id={call_id}"
    return asyncio.run(store.answer(call_id, head))


@pytest.mark.spec("W14")
def test_result_id_is_read_from_either_parameter_name() -> None:
    assert result_id("/slow?x=1") is None
    assert result_id("/") is None
    assert result_id("/a?x=1&__ketch_call_id=lr-abc") == "lr-abc"
    assert result_id("/a?__modal_function_call_id=lr-abc&y=2") == "lr-abc"
    assert result_id("/a?my_call_id=3") is None


@pytest.mark.spec("W14")
def test_a_chunked_response_is_kept_and_replayed_with_a_length() -> None:
    store = LongRequests(Limits(), {"long_requests": 0})
    ex, call_id, target = _detached(store)
    # Detached: the response is read as sent, not rewritten for the old HTTP/1.0 client.
    assert ex.http10 is False and ex.keep_alive is True and ex.client is ex.sink
    sink = ex.sink
    assert sink is not None
    sink.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    sink.transport.write(
        b"HTTP/1.1 201 Created\r\nx-a: 1\r\ntransfer-encoding: chunked\r\n"
        b"connection: keep-alive\r\n\r\n5\r\nhello\r\n"
    )
    sink.transport.write(b"6\r\n world\r\n0\r\n\r\n")
    ex.resolve("ok")
    assert target.released == ["ok"]
    ready = _answer(store, call_id)
    assert isinstance(ready, Ready) and ready.status == 201
    data = ready.encode(close=False)
    head, _, body = data.partition(b"\r\n\r\n")
    assert body == b"hello world"
    fields = head.split(b"\r\n")
    assert fields[0] == b"HTTP/1.1 201 Created"
    assert b"x-a: 1" in fields and b"content-length: 11" in fields
    assert not any(f.lower().startswith((b"transfer-encoding", b"connection")) for f in fields)
    assert ready.encode(close=True).count(b"connection: close") == 1


@pytest.mark.spec("W14")
def test_errors_methods_owners_and_expiry() -> None:
    limits = Limits(request_timeout=0.05, result_retention=600.0)
    store = LongRequests(limits, {"long_requests": 0})
    ex, call_id, target = _detached(store)
    # Still running: another 303 to the same URL once the wait is over.
    waiting = _answer(store, call_id)
    assert isinstance(waiting, Ready) and waiting.status == 303
    assert b"location: /slow?x=1&__ketch_call_id=" + call_id.encode() in waiting.head
    # The upstream failed: the 502 is the result, and the container slot is released.
    ex.error = (502, "the app sent a malformed response")
    ex.resolve("retry")
    assert target.released == ["upstream_error"]
    failed = _answer(store, call_id)
    assert isinstance(failed, Ready) and failed.status == 502
    assert failed.body.startswith(b"ketch: the app sent a malformed response")
    post = _answer(store, call_id, method="POST")
    assert isinstance(post, Denied) and post.status == 400
    other = RequestHead(
        "GET", f"/?__ketch_call_id={call_id}", [], "other.localhost", 4000, ("127.0.0.1", 1), False
    )
    elsewhere = asyncio.run(store.answer(call_id, other))
    assert isinstance(elsewhere, Denied) and elsewhere.status == 404
    assert store.kept > 0
    store.sweep(1e18)  # long after the retention
    gone = _answer(store, call_id)
    assert isinstance(gone, Denied) and gone.status == 404 and "expired" in gone.message
    assert store.kept == 0 and len(store) == 0


@pytest.mark.spec("W14")
def test_the_byte_bound_cuts_off_a_large_response_and_refuses_new_records() -> None:
    limits = Limits(max_kept_bytes=2 * RECORD_COST + 600)
    store = LongRequests(limits, {"long_requests": 0})
    ex, call_id, target = _detached(store)
    sink = ex.sink
    assert sink is not None
    sink.transport.write(b"HTTP/1.1 200 OK\r\ncontent-length: 5000\r\n\r\n")
    sink.transport.write(b"x" * 2000)  # over the bound: cut off, kept as a 502
    assert target.released == ["upstream_error"]
    ready = _answer(store, call_id)
    assert isinstance(ready, Ready) and ready.status == 502 and b"larger" in ready.body
    ex.resolve("ok")  # a late report from the upstream changes nothing
    assert target.released == ["upstream_error"]
    # One more record fits; a third does not: that request is not detached at all.
    _detached(store)
    third = Exchange(
        _Client(),
        b"GET",
        b"/",
        http10=False,
        keep_alive=True,
        chunked=False,
        has_body=False,
        websocket=False,
    )
    assert store.detach(third, "x") is None and third.sink is None
