"""Serving a client connection's parsed requests strictly in order, one at a time.

A task is made per request only to run the resolver (eagerly on Python 3.12+, so that a
resolver that answers at once costs no extra turn of the loop) and to open a new upstream
connection. The resolver thus always runs inside a task, as asyncio code expects
(asyncio.timeout, TaskGroup and anyio need one). The gateway's own answers, the switch to a
websocket tunnel and the connection's timers are here too.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Coroutine
from typing import Any

from ketch._gateway.client_base import STATUS_KEYS, ClientBase
from ketch._gateway.exchange import BACKPRESSURE, QUEUED, RESOLVING, UPGRADING, Exchange
from ketch._gateway.http import forward_request_head, platform_response
from ketch._gateway.longrequests import CALL_ID_PARAMS, redirect, result_id, still_running
from ketch._gateway.resolver import Denied, Ready, Target
from ketch._gateway.upstream import Upstream, UpstreamUnavailable

__all__ = ["Serving"]

log = logging.getLogger("ketch.gateway")


if sys.version_info >= (3, 12):

    def _start_task(
        loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, None]
    ) -> asyncio.Task[None]:
        return asyncio.Task(coro, loop=loop, eager_start=True)

else:

    def _start_task(
        loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, None]
    ) -> asyncio.Task[None]:
        return loop.create_task(coro)


class Serving(ClientBase):
    """The request loop of a client connection: resolver, upstream, answers, timers."""

    # -- used by the upstream side ----------------------------------------------------------

    def enter_tunnel(self, upstream: Upstream) -> None:
        """The container accepted the upgrade: from now on bytes pass unparsed both ways,
        starting with those held since the handshake."""
        self._tunnel = upstream
        self._stop = True
        self._cancel_timer()
        ex = upstream.exchange
        if ex is not None and ex.tunnel_data:
            upstream.write(ex.tunnel_data)
            ex.tunnel_data = b""
        self.resume(RESOLVING | QUEUED | UPGRADING)
        self._stats["websockets"] += 1

    def exchange_ended(self, ex: Exchange, outcome: str) -> None:
        """The upstream side finished `ex`: answer for a failure if still possible, go on."""
        if ex.ended:
            return
        if outcome == "retry" and not ex.retried and not self._gone:
            ex.retried = True
            self._stats["upstream_retries"] += 1
            self._spawn(ex, self._open(ex))
            return
        if outcome in ("retry", "upstream_error"):
            outcome = "upstream_error"
            self._stats["upstream_errors"] += 1
            message = ex.error[1] if ex.error else "the app closed the connection before answering"
            self._answer(ex, 502, message)
        elif outcome == "client_error" and ex.error is not None:
            self._answer(ex, *ex.error)
        self._end(ex, outcome)

    # -- serving ----------------------------------------------------------------------------

    def _pump(self) -> None:
        """Serve queued requests while none is in flight; when none is left, wait for one."""
        if self._pumping:
            return  # an exchange ended inside _begin: the loop below goes on
        self._pumping = True
        try:
            while self._active is None and not self._gone and not self._draining:
                if not self._queue:
                    if self._stop:
                        self.close()
                    else:
                        self.resume(QUEUED)
                        if self._begun:
                            self._arm(self._limits.head_timeout)
                        else:
                            self._arm(self._limits.keepalive_timeout)
                            self._idle = True
                    return
                ex = self._queue.popleft()
                if not self._queue and not self._begun:
                    self.resume(QUEUED)  # its body, if any, must be read
                self._active = ex
                self._begin(ex)
        finally:
            self._pumping = False

    def _begin(self, ex: Exchange) -> None:
        if ex.reject is not None:
            ex.close_client = True
            self._answer(ex, *ex.reject)
            self._end(ex, None)
            return
        when = self._req_deadline = self._loop.time() + self._limits.request_timeout
        if self._timer is None or self._timer_at > when:
            self._schedule(when)
        self._spawn(ex, self._resolve(ex))

    def _spawn(self, ex: Exchange, coro: Coroutine[Any, Any, None]) -> None:
        """Run `coro` for `ex`; while it waits, it is `ex.task` (cancelled if the client goes)."""
        task = _start_task(self._loop, coro)
        if not task.done():
            ex.task = task

    async def _resolve(self, ex: Exchange) -> None:
        assert ex.head is not None
        try:
            result = await self._gw.resolver(ex.head)
        except asyncio.CancelledError:
            ex.task = None
            self._end(ex, None)
            return
        except Exception:
            ex.task = None
            log.exception("the gateway's resolver failed on %s %s", ex.head.method, ex.head.target)
            self._answer(ex, 500, "internal error while routing the request")
            self._end(ex, None)
            return
        ex.task = None
        self._resolved(ex, result)

    def _resolved(self, ex: Exchange, result: Target | Denied | Ready) -> None:
        if isinstance(result, (Denied, Ready)):
            if isinstance(result, Ready):
                self._send_ready(ex, result)
            else:
                self._stats["denied"] += 1
                self._answer(ex, result.status, result.message, result.headers)
            self._end(ex, None)
            return
        ex.destination = result
        if self._gone and ex.sink is None:
            self._end(ex, self._gone_outcome())
            return
        assert ex.head is not None and ex.facts is not None and ex.fwd is not None
        ex.forward_head = forward_request_head(
            ex.method,
            ex.target,
            ex.head.headers,
            ex.facts,
            ex.fwd,
            remove=result.remove_headers,
            trusted_peer=self._trusted_peer,
            websocket=ex.websocket,
        )
        up = self._gw._pool.take(result.address)
        if up is not None:
            self._attach(ex, up)
        else:
            self._spawn(ex, self._open(ex))

    async def _open(self, ex: Exchange) -> None:
        assert ex.destination is not None
        try:
            up = await self._gw._pool.open(ex.destination.address)
        except UpstreamUnavailable as exc:
            ex.task = None
            self._stats["upstream_errors"] += 1
            self._answer(ex, 502, str(exc))
            self._end(ex, "upstream_error")
            return
        except asyncio.CancelledError:
            ex.task = None
            self._end(ex, self._gone_outcome())
            return
        ex.task = None
        if self._gone and ex.sink is None:
            self._gw._pool.put(up)
            self._end(ex, self._gone_outcome())
            return
        self._attach(ex, up)

    def _attach(self, ex: Exchange, up: Upstream) -> None:
        if ex.error is not None:  # the body went bad while the upstream was sought
            self._gw._pool.put(up)
            self._answer(ex, *ex.error)
            self._end(ex, "client_error")
            return
        up.start(ex, ex.forward_head)
        if ex.sink is None:
            self.resume(RESOLVING)

    def _end(self, ex: Exchange, outcome: str | None) -> None:
        """The exchange is over: release its target, then go on with the connection."""
        if ex.sink is not None:
            ex.sink.end(outcome)  # detached (W14): this connection moved on long ago
            return
        if ex.ended:
            return
        ex.ended = True
        if outcome == "client_gone":
            self._stats["client_gone"] += 1
        target = ex.destination
        if target is not None and outcome is not None:
            try:
                target.release(outcome)
            except Exception:
                log.exception("releasing the target of %s failed", ex.head)
        if self._active is ex:
            self._active = None
            self._req_deadline = 0.0
        if self._gone:
            return
        if self._tunnel is not None or not ex.started or ex.close_client or not ex.body_done:
            self.close()
            return
        self._pump()

    def _answer(
        self, ex: Exchange, status: int, message: str, headers: list[tuple[str, str]] | None = None
    ) -> None:
        """Send a platform answer for `ex`, unless its response has begun."""
        if ex.sink is not None:
            ex.sink.answer(status, message, headers)
            return
        if ex.started or self._gone:
            return
        close = (
            ex.close_client or not ex.body_done or not ex.keep_alive or ex.http10 or ex.websocket
        )
        try:
            data = platform_response(status, message, headers, close=close)
        except ValueError:
            log.exception("a platform answer could not be written")
            status = 500
            data = platform_response(500, "internal error", close=close)
        if ex.is_head_method:
            data = data[: data.index(b"\r\n\r\n") + 4]
        self.transport.write(data)
        ex.started = True
        if ex.head is not None:
            ex.head.status = status
        ex.close_client = close
        self._stats[STATUS_KEYS[min(status // 100, 5)]] += 1
        if close:
            self._stop = True

    def _send_ready(self, ex: Exchange, ready: Ready) -> None:
        """Send a complete response the gateway holds (a long request's result)."""
        if ex.started or self._gone:
            return
        close = not ex.keep_alive or ex.http10 or ex.close_client
        self.transport.write(ready.encode(close=close, head_only=ex.is_head_method))
        ex.started = True
        if ex.head is not None:
            ex.head.status = ready.status
        ex.close_client = close
        self._stats[STATUS_KEYS[min(ready.status // 100, 5)]] += 1
        if close:
            self._stop = True

    def _refuse(self, status: int, message: str) -> None:
        """Answer a request the gateway will not serve, in its turn, and end the connection."""
        if self._stop:
            return
        self._stop = True
        self._begun = False
        self._stats["bad_requests"] += 1
        ex = self._parsing
        if ex is not None and not ex.body_done:
            # The body of an accepted request went bad mid-stream.
            ex.close_client = True
            if ex is self._active:
                ex.error = (status, message)
                up = ex.upstream
                if up is not None:
                    up.abort()
                    ex.resolve("client_error")
            else:
                ex.reject = (status, message)
            return
        if self._active is None and not self._queue:
            self._stats[STATUS_KEYS[status // 100]] += 1
            self.transport.write(platform_response(status, message, close=True))
            self.close()
        else:
            ex = Exchange(
                self,
                b"",
                b"",
                http10=False,
                keep_alive=False,
                chunked=False,
                has_body=False,
                websocket=False,
            )
            ex.body_done = True
            ex.reject = (status, message)
            self._queue.append(ex)

    def _upgraded(self, rest: bytes) -> None:
        """The parser stopped at an upgrade: what follows the head is not HTTP/1.1.

        Those bytes are held, not sent: until the container's 101 they belong to no
        protocol, and a container that does not switch would read them as requests nobody
        checked. After a 101 they go into the tunnel; after any other answer they are
        dropped with the connection."""
        ex, self._upgrade = self._upgrade, None
        self._stop = True
        if ex is None or not ex.websocket or self._gone:
            return
        if rest:
            ex.tunnel_data += rest
        if self._tunnel is None:
            self.pause(UPGRADING)

    # -- timers ------------------------------------------------------------------------------

    def _arm(self, delay: float) -> None:
        when = self._loop.time() + delay
        self._deadline = when
        self._idle = False
        if self._timer is None or self._timer_at > when:
            self._schedule(when)

    def _schedule(self, when: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self._loop.call_at(when, self._on_timer)
        self._timer_at = when

    def _on_timer(self) -> None:
        self._timer = None
        if self._gone:
            return
        now = self._loop.time() + 0.002
        if self._req_deadline and now >= self._req_deadline:
            self._req_deadline = 0.0
            self._on_request_timeout()
        if self._deadline and now >= self._deadline and not self._gone:
            self._deadline = 0.0
            self._on_timeout()
        # Deadlines moved on meanwhile, or were set by what ran above: wait for the next.
        later = [d for d in (self._deadline, self._req_deadline) if d]
        if later and not self._gone:
            when = min(later)
            if self._timer is None or self._timer_at > when:
                self._schedule(when)

    def _on_request_timeout(self) -> None:
        """No response head within the request timeout: unless it cannot be, the request is
        detached and its client redirected to the result URL (W14). A response that has
        begun (a stream), a websocket, a body still arriving and a result URL itself are
        left alone."""
        ex = self._active
        if (
            ex is None
            or ex.started
            or ex.ended
            or ex.websocket
            or not ex.body_done
            or ex.sink is not None
            or self._tunnel is not None
            or self._draining
            or ex.head is None
            or result_id(ex.head.target) is not None
        ):
            return
        close = not ex.keep_alive or ex.http10 or ex.close_client
        call_id = self._gw.results.detach(ex, self._gw.owner_of(ex.head))
        if call_id is None:
            return  # no room to keep another response: the client waits on
        target = ex.head.target
        location = f"{target}{'&' if '?' in target else '?'}{CALL_ID_PARAMS[0]}={call_id}"
        data = redirect(location, still_running(self._limits.request_timeout)).encode(
            close=close, head_only=ex.is_head_method
        )
        self.transport.write(data)
        self._stats["responses_3xx"] += 1
        if close:
            self._stop = True
        # The exchange goes on without this connection: it no longer holds back reading,
        # and a paused write side must not hold back the upstream now read into the sink.
        self._active = None
        self.resume(RESOLVING | BACKPRESSURE)
        up = ex.upstream
        if up is not None and self.write_paused:
            up.resume_reading()
        self._pump()

    def _on_timeout(self) -> None:
        if self._gone or self._active is not None or self._tunnel is not None:
            return
        if self._begun:
            # A head that started but did not finish in time: a slow or stuck client.
            self._stats["timeouts"] += 1
            self._stats["responses_4xx"] += 1
            self.transport.write(
                platform_response(408, "timed out waiting for the request head", close=True)
            )
        self.close()
