"""W3C trace context on the call protocol (O5): the caller's OpenTelemetry context out of
the SDK, and into the container's user code. Neither side imports opentelemetry for it:
the SDK reads a context only where the caller's program has loaded the API, and the
container sets one only where the API is importable."""

from __future__ import annotations

import re
import sys
from typing import Any

# version-trace_id-parent_id-flags; version ff is forbidden by the W3C text.
TRACEPARENT = r"^(?!ff)[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$"
_TRACEPARENT = re.compile(TRACEPARENT)


def is_traceparent(value: object) -> bool:
    return isinstance(value, str) and len(value) == 55 and bool(_TRACEPARENT.match(value))


def current_traceparent() -> str | None:
    """The `traceparent` of the caller's current span, when it has a valid one."""
    trace: Any = sys.modules.get("opentelemetry.trace")
    if trace is None:
        return None  # the program never loaded OpenTelemetry: it has no context to pass
    try:
        ctx = trace.get_current_span().get_span_context()
    except Exception:  # a broken or foreign instrumentation must not fail the call
        return None
    if not getattr(ctx, "is_valid", False):
        return None
    return f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{int(ctx.trace_flags) & 0xFF:02x}"


def attach(traceparent: str) -> object | None:
    """Make `traceparent` the current OpenTelemetry context of the running task or
    thread (the caller's span becomes the parent of what user code starts); the token
    for `detach`, or None when OpenTelemetry is not importable here."""
    try:
        from opentelemetry import context
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
    except ImportError:
        return None
    return context.attach(TraceContextTextMapPropagator().extract({"traceparent": traceparent}))


def detach(token: object) -> None:
    from opentelemetry import context

    context.detach(token)  # type: ignore[arg-type]
