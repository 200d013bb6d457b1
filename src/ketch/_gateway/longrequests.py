"""Long requests (W14): a request with no response by the request timeout is detached from
its client, which gets a 303 to a result URL; the response is kept here for that URL.

A detached exchange goes on exactly as before against its container (or its queue): only
the object it answers to changes, from the client connection to a `ResultSink` that buffers
the response. So the common path pays nothing but the connection's one timer check, and a
result URL never runs the function again: it only reads the record.

Memory is bounded: every byte buffered or kept counts against `Limits.max_kept_bytes`
(plus a fixed cost per record); a response that would go past it is cut off and kept as a
502, and when even a record's fixed cost does not fit, the request is not detached (its
client waits on). Finished records expire `Limits.result_retention` seconds after they end.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl

import httptools

from ketch._gateway.http import HOP_BY_HOP, Limits, platform_response
from ketch._gateway.resolver import Denied, Ready
from ketch._utils.ids import new_id

if TYPE_CHECKING:
    from ketch._gateway.exchange import Exchange
    from ketch._gateway.resolver import RequestHead
    from ketch._gateway.upstream import Upstream

__all__ = ["CALL_ID_PARAMS", "LongRequests", "ResultSink", "redirect", "result_id"]

log = logging.getLogger("ketch.gateway")

# The query parameter naming a long request's result; Modal's name is accepted as well.
CALL_ID_PARAMS = ("__ketch_call_id", "__modal_function_call_id")

# What a record costs besides its response bytes, so that the byte bound also bounds how
# many records there can be.
RECORD_COST = 1024

# Framing is the gateway's own when it replays a kept response.
_NOT_KEPT = HOP_BY_HOP | {b"transfer-encoding", b"content-length"}


def result_id(target: str) -> str | None:
    """The call id of a result URL, or None when `target` is not one."""
    if "_call_id=" not in target:  # cheap test first: this runs for every routed request
        return None
    for name, value in parse_qsl(target.partition("?")[2], keep_blank_values=True):
        if name in CALL_ID_PARAMS:
            return value
    return None


def redirect(location: str, message: str) -> Ready:
    """A 303 See Other to `location` with a `ketch:` body."""
    return _error(303, message, [("location", location)])


class Record:
    """One detached request: running (`response` None), then finished until it expires."""

    __slots__ = ("call_id", "cost", "expires", "owner", "response", "sink", "waiters")

    def __init__(self, call_id: str, owner: str, sink: ResultSink) -> None:
        self.call_id = call_id
        self.owner = owner  # where it came in (its endpoint): its result is read there only
        self.sink: ResultSink | None = sink
        self.response: Ready | None = None
        self.cost = RECORD_COST  # bytes counted against the bound for this record
        self.expires = 0.0
        self.waiters: list[asyncio.Future[None]] = []


class LongRequests:
    """The detached requests of one gateway and their kept responses, by call id."""

    def __init__(self, limits: Limits, stats: dict[str, int]) -> None:
        self.limits = limits
        self.stats = stats
        self.kept = 0  # bytes counted against limits.max_kept_bytes
        self._records: dict[str, Record] = {}
        self._finished: dict[str, Record] = {}  # in the order they finished = expiry order
        self._warned = False

    def __len__(self) -> int:
        return len(self._records)

    # -- detaching ------------------------------------------------------------------------

    def detach(self, ex: Exchange, owner: str) -> str | None:
        """Take `ex` over from its client: its response will go to a new record. Returns
        the record's call id, or None when the byte bound leaves no room for one."""
        if not self.reserve(RECORD_COST):
            if not self._warned:
                self._warned = True
                log.warning(
                    "long requests: %d bytes of results are kept (the bound); a slow "
                    "request is left waiting instead of being redirected",
                    self.kept,
                )
            return None
        call_id = new_id("lr")
        sink = ResultSink(self, ex)
        record = Record(call_id, owner, sink)
        sink.record = record
        self._records[call_id] = record
        # The sink reads the response as sent, with no rewriting for the client's sake.
        ex.client = sink
        ex.sink = sink
        ex.http10 = False
        ex.keep_alive = True
        ex.close_client = False
        self.stats["long_requests"] += 1
        return call_id

    def reserve(self, n: int) -> bool:
        if self.kept + n > self.limits.max_kept_bytes:
            return False
        self.kept += n
        return True

    def finish(self, record: Record, response: Ready, buffered: int) -> None:
        """`record` has its response; `buffered` bytes reserved while it came are given back."""
        record.sink = None
        record.response = response
        size = len(response.head) + len(response.body)
        self.kept -= buffered
        # Kept even past the bound, once: it was already in memory while it arrived.
        self.kept += size
        record.cost += size
        record.expires = time.monotonic() + self.limits.result_retention
        self._finished[record.call_id] = record
        for fut in record.waiters:
            if not fut.done():
                fut.set_result(None)
        record.waiters.clear()

    # -- result URLs ----------------------------------------------------------------------

    async def answer(
        self, call_id: str, head: RequestHead, owner: str | None = None
    ) -> Ready | Denied:
        """What a request to a result URL gets: the kept response, once it is there, or a
        303 to the same URL after another request timeout; 400 for a method other than
        GET; 404 for an id unknown here (or expired), or detached from another `owner`
        (by default: the host and port the request came in on)."""
        if head.method != "GET":
            return Denied(
                400,
                f"a result URL ({CALL_ID_PARAMS[0]}) answers GET only, "
                f"not {head.method}; follow the 303 with a GET",
            )
        record = self._records.get(call_id)
        if record is None or record.owner != (owner if owner is not None else owner_of(head)):
            return Denied(
                404,
                f"no long-request result {call_id!r} here: the id is unknown, "
                f"or its result expired (results are kept "
                f"{self.limits.result_retention:g}s after they finish)",
            )
        if record.response is None:
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            record.waiters.append(fut)
            try:
                async with asyncio.timeout(self.limits.request_timeout):
                    await fut
            except TimeoutError:
                pass
            finally:
                if fut in record.waiters:
                    record.waiters.remove(fut)
            if record.response is None:
                return redirect(head.target, still_running(self.limits.request_timeout))
        return record.response

    # -- housekeeping ---------------------------------------------------------------------

    def sweep(self, now: float) -> None:
        """Forget the results whose retention has passed."""
        finished = self._finished
        while finished:
            call_id, record = next(iter(finished.items()))
            if record.expires > now:
                break
            del finished[call_id]
            self._records.pop(call_id, None)
            self.kept -= record.cost

    def close(self) -> list[asyncio.Task[None]]:
        """The gateway is closing: stop every detached request; the tasks still to finish."""
        tasks: list[asyncio.Task[None]] = []
        for record in list(self._records.values()):
            sink = record.sink
            if sink is None:
                continue
            ex = sink.ex
            if ex.task is not None:
                ex.task.cancel()  # its continuation ends the exchange through the sink
                tasks.append(ex.task)
            else:
                up = ex.upstream
                if up is not None:
                    up.abort()
                sink.end("cancelled")
        return tasks


def owner_of(head: RequestHead) -> str:
    """Who a request is for, when nothing better is known: the host and port it came in on."""
    return f"{head.host or ''}|{head.local_port}"


def still_running(timeout: float) -> str:
    return (
        f"no response within the {timeout:g}s request timeout; the request goes on, "
        "and the Location URL waits for its response (reloading it never runs it again)"
    )


class ResultSink(asyncio.Transport):
    """Stands in for the client connection of a detached exchange: the upstream writes the
    response here, and the end of the exchange turns it into the record's response.

    It is the `Client` of the exchange and that client's transport at once."""

    def __init__(self, store: LongRequests, ex: Exchange) -> None:
        super().__init__()
        self.store = store
        self.ex = ex
        self.record: Record | None = None
        self.transport: asyncio.Transport = self
        self.write_paused = False
        self._chunks: list[bytes] = []
        self._buffered = 0
        self._response: Ready | None = None  # set early by an error, else from the chunks

    # -- the transport the upstream writes to ---------------------------------------------

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._response is not None or self.ex.ended:
            return
        n = len(data)
        if not self.store.reserve(n):
            self._response = _error(
                502,
                f"the response is larger than the gateway keeps for long requests "
                f"({self.store.limits.max_kept_bytes} bytes in all); it was cut off",
            )
            up = self.ex.upstream
            if up is not None:
                up.abort()
            self.end("upstream_error")
            return
        self._buffered += n
        self._chunks.append(bytes(data))

    def writelines(self, list_of_data: Iterable[bytes | bytearray | memoryview]) -> None:
        for data in list_of_data:
            self.write(data)

    def is_closing(self) -> bool:
        return self.ex.ended

    def get_write_buffer_size(self) -> int:
        return 0

    # -- the client side of the exchange --------------------------------------------------

    def pause(self, reason: int) -> None:
        pass  # the request's body is all sent: nothing to hold back

    def resume(self, reason: int) -> None:
        pass

    def enter_tunnel(self, upstream: Upstream) -> None:
        upstream.abort()  # never: websocket upgrades are not detached

    def close(self) -> None:
        pass

    def exchange_ended(self, ex: Exchange, outcome: str) -> None:
        """The upstream side is done: keep its response, or the error in its place."""
        if ex.ended:
            return
        if outcome != "ok":
            message = ex.error[1] if ex.error else "the app closed the connection before answering"
            self.answer(502, message)
            outcome = "upstream_error"
        self.end(outcome)

    def answer(
        self, status: int, message: str, headers: list[tuple[str, str]] | None = None
    ) -> None:
        """A platform answer for the detached request (the connection's `_answer`)."""
        if self._response is None:
            self._response = _error(status, message, headers)
            if self.ex.head is not None:
                self.ex.head.status = status

    def end(self, outcome: str | None) -> None:
        """The exchange is over (the connection's `_end`): release its target, keep the
        response."""
        ex = self.ex
        if ex.ended:
            return
        ex.ended = True
        target = ex.destination
        if target is not None and outcome is not None:
            try:
                target.release(outcome)
            except Exception:
                log.exception("releasing the target of a long request failed")
        response = self._response
        if response is None:
            response = (
                _parse(self._chunks)
                if outcome == "ok"
                else _error(502, "the request was cancelled before the app answered")
            )
        self._chunks = []
        record = self.record
        if record is not None:
            self.store.finish(record, response, self._buffered)
        self._buffered = 0


def _error(status: int, message: str, headers: list[tuple[str, str]] | None = None) -> Ready:
    data = platform_response(status, message, headers, close=False)
    head, _, body = data.partition(b"\r\n\r\n")
    lines = [ln for ln in head.split(b"\r\n") if not ln.lower().startswith(b"content-length:")]
    return Ready(status, b"\r\n".join(lines) + b"\r\n", body)


class _Collector:
    """httptools callbacks gathering one response (after any 1xx) with its body decoded."""

    def __init__(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.body: list[bytes] = []

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()
        if self.status < 200:
            self.headers = []  # an interim response: the final one follows

    def on_body(self, body: bytes) -> None:
        self.body.append(body)


def _parse(chunks: list[bytes]) -> Ready:
    """The response the upstream sent (as one HTTP/1.1 message), ready to replay."""
    c = _Collector()
    try:
        c.parser.feed_data(b"".join(chunks))
    except httptools.HttpParserError as exc:
        return _error(502, f"the app sent a malformed response ({exc})")
    if c.status < 200:
        return _error(502, "the app sent no final response")
    try:
        from http import HTTPStatus

        reason = HTTPStatus(c.status).phrase.encode()
    except ValueError:
        reason = b""
    lines = [b"HTTP/1.1 %d %s\r\n" % (c.status, reason)]
    lines += (
        name + b": " + value + b"\r\n" for name, value in c.headers if name.lower() not in _NOT_KEPT
    )
    return Ready(c.status, b"".join(lines), b"".join(c.body))
