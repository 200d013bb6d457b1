"""OpenTelemetry export (O5): a span per web request and per call, with children for the
queue wait, the container start and the execution, sent over OTLP/HTTP; container logs
and platform events as OTLP logs.

Only `from_config` is reached when the setting is off, and it imports nothing: the SDK is
loaded by `Tracing` itself, and the request path sees one `is None` check per hook. Spans
whose times are known only afterwards (the queue, a container's start) are recorded with
explicit start and end times when the input is handed to a container; the execution span
is started then, live, so that its context can travel with the input.
"""

from __future__ import annotations

import contextvars
import logging
import os
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    from ketch._gateway.proxy import Gateway
    from ketch._gateway.resolver import Denied, Ready, RequestHead, Target
    from ketch._server.logs import LogHub
    from ketch._server.model import Container, Input, WebRequest, Work
    from ketch._server.scheduler import Scheduler
    from ketch.config import Config

log = logging.getLogger("ketch.tracing")

# The web request whose resolver is running in this task (set around the resolver call,
# read by the scheduler's hook when the request becomes an input).
_web: contextvars.ContextVar[_Trace | None] = contextvars.ContextVar(
    "ketch_web_trace", default=None
)

_SERVICE = "ketch"


def from_config(config: Config) -> Tracing | None:
    """The server's tracing, or None when `otel_endpoint` is not set (nothing imported)."""
    if not config.otel_endpoint:
        return None
    if os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        log.info("OTEL_SDK_DISABLED=true: no traces are exported")
        return None
    return Tracing(config.otel_endpoint)


def _wall_ns(mono: float, now_mono: float, now_ns: int) -> int:
    """A monotonic time as nanoseconds since the epoch (what spans carry)."""
    return now_ns - int((now_mono - mono) * 1e9)


def _traceparent(span: Any) -> str:
    ctx = span.get_span_context()
    return f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{int(ctx.trace_flags) & 0xFF:02x}"


class _Trace:
    """One request's or input's spans: the root (ketch's server span) and the execution
    span of the attempt under way."""

    __slots__ = ("attached", "ended", "execute", "headers", "last_assign", "root")

    def __init__(self, root: Any, headers: list[tuple[bytes, bytes]] | None = None) -> None:
        self.root = root
        self.execute: Any = None
        self.headers = headers  # a web request's head, forwarded to the container after
        self.attached = False  # a web request that became an input
        self.last_assign = 0.0
        self.ended = False


class Tracing:
    def __init__(self, endpoint: str) -> None:
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
            from opentelemetry.sdk.resources import Resource
            from opentelemetry.sdk.trace import TracerProvider
            from opentelemetry.sdk.trace.export import BatchSpanProcessor
            from opentelemetry.trace import SpanKind, Status, StatusCode
            from opentelemetry.trace.propagation.tracecontext import (
                TraceContextTextMapPropagator,
            )
        except ImportError as exc:
            from ketch.exception import InvalidError

            raise InvalidError(
                f"otel_endpoint (KETCH_OTEL_ENDPOINT) is set but the OpenTelemetry SDK is "
                f"not installed ({exc}): install ketch[otel], or unset it"
            ) from None
        base = endpoint.rstrip("/")
        self._kinds = SpanKind
        self._status = Status
        self._codes = StatusCode
        self._propagator = TraceContextTextMapPropagator()
        # The server's own provider, never the global one: FastAPI (the management API)
        # and any library in the server process keep theirs.
        resource = Resource.create(
            {"service.name": os.environ.get("OTEL_SERVICE_NAME") or _SERVICE}
        )
        self.provider = TracerProvider(resource=resource, shutdown_on_exit=False)
        # The standard variables (headers, timeout, compression, a traces endpoint of its
        # own) are read by the exporter; the batch processor reads OTEL_BSP_*.
        traces_url = (
            None if os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") else f"{base}/v1/traces"
        )
        self.provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(traces_url)))
        self.tracer = self.provider.get_tracer("ketch")
        self.logger: Any = None
        self.log_provider: Any = None
        if os.environ.get("OTEL_LOGS_EXPORTER", "otlp").strip().lower() != "none":
            self._start_logs(base, resource)

    def _start_logs(self, base: str, resource: Any) -> None:
        from opentelemetry._logs import SeverityNumber
        from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
        from opentelemetry.sdk._logs import LoggerProvider
        from opentelemetry.sdk._logs.export import BatchLogRecordProcessor

        logs_url = None if os.environ.get("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT") else f"{base}/v1/logs"
        self.log_provider = LoggerProvider(resource=resource, shutdown_on_exit=False)
        self.log_provider.add_log_record_processor(
            BatchLogRecordProcessor(OTLPLogExporter(logs_url))
        )
        self.logger = self.log_provider.get_logger("ketch.logs")
        self._severity = {
            "stdout": (SeverityNumber.INFO, "INFO"),
            "stderr": (SeverityNumber.WARN, "WARN"),
            "system": (SeverityNumber.INFO, "INFO"),
        }

    # -- wiring -------------------------------------------------------------------------
    def install(self, scheduler: Scheduler, logs: LogHub, gateway: Gateway) -> None:
        """Hook into the scheduler (inputs), the gateway (web requests) and the log hub."""
        scheduler.tracing = self
        scheduler.on_input_done = _chain(scheduler.on_input_done, self.input_done)
        scheduler.on_web_done = _chain(scheduler.on_web_done, self.web_done)
        gateway.resolver = self.resolver(gateway.resolver)
        if self.logger is not None:
            logs.on_entry = self.log_entry

    def shutdown(self) -> None:
        """Send what is still buffered (blocking: run it in a thread)."""
        for provider in (self.provider, self.log_provider):
            if provider is not None:
                try:
                    provider.shutdown()
                except Exception:
                    log.exception("the OpenTelemetry exporter failed to shut down")

    # -- web requests -------------------------------------------------------------------
    def resolver(
        self, inner: Callable[[RequestHead], Awaitable[Target | Denied | Ready]]
    ) -> Callable[[RequestHead], Awaitable[Target | Denied | Ready]]:
        from ketch._gateway.resolver import Denied, Ready

        async def traced(head: RequestHead) -> Target | Denied | Ready:
            carrier = {
                name.decode("latin-1"): value.decode("latin-1")
                for name, value in head.headers
                if name in (b"traceparent", b"tracestate")
            }
            parent = self._propagator.extract(carrier) if carrier else None
            path = head.target.split("?", 1)[0]
            root = self.tracer.start_span(
                head.method,
                context=parent,
                kind=self._kinds.SERVER,
                attributes={
                    "http.request.method": head.method,
                    "url.path": path,
                    "server.address": head.host or "",
                    "server.port": head.local_port,
                },
            )
            state = _Trace(root, head.headers)
            token = _web.set(state)
            try:
                result = await inner(head)
            except BaseException as exc:
                self._end(state, ok=False, status=None, error=repr(exc))
                raise
            finally:
                _web.reset(token)
            if isinstance(result, (Denied, Ready)):
                self._end(
                    state,
                    ok=result.status < 500,
                    status=result.status,
                    error=getattr(result, "message", None),
                )
            elif not state.attached:
                self._end(state, ok=True, status=None)
            return result

        return traced

    def web_input(self, inp: WebRequest) -> None:
        state = _web.get()
        if state is None:
            return
        state.attached = True
        inp.trace = state
        fdef = inp.function
        state.root.update_name(f"{state.root.name} {fdef.tag}")
        state.root.set_attributes(_input_attributes(inp))

    def web_done(self, inp: WebRequest, outcome: str, status: int) -> None:
        state: _Trace | None = inp.trace
        if state is not None:
            self._end(
                state,
                ok=outcome == "ok" and status < 500,
                status=status or None,
                error=None if outcome == "ok" else outcome,
            )

    # -- calls --------------------------------------------------------------------------
    def input_started(self, inp: Input) -> None:
        parent = None
        traceparent = inp.request.get("traceparent")
        if traceparent:
            parent = self._propagator.extract({"traceparent": traceparent})
        kind = "spawn" if inp.spawned else inp.kind
        now_m, now_ns = time.monotonic(), time.time_ns()
        root = self.tracer.start_span(
            f"{kind} {inp.function.tag}",
            context=parent,
            kind=self._kinds.CONSUMER if inp.spawned else self._kinds.SERVER,
            start_time=_wall_ns(inp.created, now_m, now_ns),
            attributes={**_input_attributes(inp), "ketch.call.kind": kind},
        )
        inp.trace = _Trace(root)

    def input_done(self, inp: Input, ok: bool) -> None:
        state: _Trace | None = inp.trace
        if state is not None:
            self._end(state, ok=ok, status=None, error=None if ok else "the call failed")

    # -- both -----------------------------------------------------------------------------
    def assigned(self, inp: Work, c: Container) -> None:
        """The input is handed to container `c`: record its queue wait and the start of
        the container it waited for, and open its execution span."""
        state: _Trace | None = inp.trace
        if state is None:
            return
        from opentelemetry import trace

        now_m, now_ns = time.monotonic(), time.time_ns()
        parent = trace.set_span_in_context(state.root)
        queued = max(inp.queued_at or inp.created, state.last_assign)
        state.last_assign = now_m
        common = {"ketch.container": c.cid}
        self.tracer.start_span(
            "ketch.queue",
            context=parent,
            start_time=_wall_ns(queued, now_m, now_ns),
            attributes=common,
        ).end(now_ns)
        method = str(getattr(c.handle, "start_method", "plain"))
        if c.ready_at > queued:
            # The container became ready while this input waited: a cold start, counted
            # from when the input began to wait if the container was already on its way.
            start = self.tracer.start_span(
                "ketch.container.start",
                context=parent,
                start_time=_wall_ns(max(c.started, queued), now_m, now_ns),
                attributes={
                    **common,
                    "ketch.container.start": "cold",
                    "ketch.container.start_method": method,
                },
            )
            start.end(_wall_ns(c.ready_at, now_m, now_ns))
        else:
            self.tracer.start_span(
                "ketch.container.start",
                context=parent,
                start_time=now_ns,
                attributes={
                    **common,
                    "ketch.container.start": "warm",
                    "ketch.container.start_method": method,
                },
            ).end(now_ns)
        if state.execute is not None:
            # The previous attempt was lost (a crash, a timeout with a retry).
            state.execute.set_status(self._status(self._codes.ERROR, "attempt lost"))
            state.execute.end(now_ns)
        state.execute = self.tracer.start_span(
            "ketch.execute", context=parent, start_time=now_ns, attributes=common
        )
        state.root.set_attribute("ketch.container", c.cid)
        traceparent = _traceparent(state.execute)
        if state.headers is not None:
            # The container's HTTP server sees ketch's span as the caller.
            state.headers[:] = [h for h in state.headers if h[0] != b"traceparent"]
            state.headers.append((b"traceparent", traceparent.encode()))
        else:
            call = cast("Input", inp)  # a call: its context travels in the input message
            call.request = {**call.request, "traceparent": traceparent}

    def _end(
        self, state: _Trace, *, ok: bool, status: int | None, error: str | None = None
    ) -> None:
        if state.ended:
            return
        state.ended = True
        outcome = (
            self._status(self._codes.OK)
            if ok
            else self._status(self._codes.ERROR, (error or "failed")[:200])
        )
        if status is not None:
            state.root.set_attribute("http.response.status_code", status)
        state.root.set_attribute(
            "ketch.status", str(status) if status else ("ok" if ok else "error")
        )
        if state.execute is not None:
            state.execute.set_status(outcome)
            state.execute.end()
        state.root.set_status(outcome)
        state.root.end()

    # -- logs -----------------------------------------------------------------------------
    def log_entry(self, entry: dict[str, Any]) -> None:
        severity, text = self._severity.get(entry["stream"], self._severity["stdout"])
        self.logger.emit(
            timestamp=int(entry["ts"] * 1e9),
            severity_number=severity,
            severity_text=text,
            body=entry["line"],
            attributes={
                "ketch.app_id": entry["app_id"],
                "ketch.function": entry["function"],
                "ketch.container": entry["container"],
                "ketch.stream": entry["stream"],
            },
        )


def _input_attributes(inp: Work) -> dict[str, str]:
    fdef = inp.function
    return {
        "ketch.app": fdef.app_name,
        "ketch.app_id": fdef.app_id,
        "ketch.function": fdef.tag,
        "ketch.input_id": inp.iid,
    }


def _chain(first: Callable[..., None] | None, then: Callable[..., None]) -> Callable[..., None]:
    if first is None:
        return then

    def both(*args: Any) -> None:
        first(*args)
        then(*args)

    return both
