"""Functions for the OpenTelemetry tests (O5): each answers with the trace context its user
code sees, read through the OpenTelemetry API (FastAPI's dependency in a web container,
installed in the image for the plain function)."""

from __future__ import annotations

from typing import Any

import ketch

app = ketch.App("ketch-traced")

OTEL_IMAGE = ketch.Image.debian_slim().pip_install("opentelemetry-api")


def _seen() -> dict[str, Any]:
    try:
        from opentelemetry import trace
    except ImportError:
        return {"otel": False}
    ctx = trace.get_current_span().get_span_context()
    return {"otel": True, "trace_id": f"{ctx.trace_id:032x}", "span_id": f"{ctx.span_id:016x}"}


@app.function()
@ketch.fastapi_endpoint()
def web_seen() -> dict[str, Any]:
    return _seen()


@app.function(image=OTEL_IMAGE)
def call_seen() -> dict[str, Any]:
    return _seen()
