"""OpenTelemetry export off by default (O5): no tracing object, and nothing of the SDK
imported by the server's modules; the setting and the call message's trace context are
checked like every other."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from typing import Any

import pytest

from ketch._server import messages
from ketch._utils import tracecontext
from ketch.config import Config
from ketch.exception import InvalidError

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


@pytest.mark.spec("O5")
def test_off_builds_no_tracing_and_imports_no_opentelemetry() -> None:
    # A fresh interpreter: this one may have imported the SDK for other tests. FastAPI
    # itself imports the OpenTelemetry API, so what is compared is what ketch adds to it.
    script = textwrap.dedent("""
        import sys
        import fastapi

        def otel():
            return sorted(m for m in sys.modules if m.split(".")[0] == "opentelemetry")

        before = otel()
        import ketch._server.main, ketch._server.web_service, ketch._runtime.entry
        import ketch._runtime.web
        from ketch._server import tracing
        from ketch.config import Config

        assert Config().otel_endpoint == ""
        assert tracing.from_config(Config()) is None
        after = otel()
        assert after == before, sorted(set(after) - set(before))
        assert not [m for m in after if m.startswith(("opentelemetry.sdk",
                    "opentelemetry.exporter", "opentelemetry.proto"))], after
        print("ok")
    """)
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"


def test_the_endpoint_must_be_an_http_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KETCH_CONFIG_FILE", "")
    monkeypatch.setenv("KETCH_OTEL_ENDPOINT", "127.0.0.1:4318")
    with pytest.raises(InvalidError, match=r"KETCH_OTEL_ENDPOINT.*http:// or https://"):
        Config.load()
    monkeypatch.setenv("KETCH_OTEL_ENDPOINT", "http://127.0.0.1:4318")
    assert Config.load().otel_endpoint == "http://127.0.0.1:4318"


def test_a_call_may_carry_a_valid_traceparent_only() -> None:
    call: dict[str, Any] = {
        "t": "call",
        "fid": "fn-1",
        "iid": "in-1",
        "kind": "call",
        "req": {"args": b"x", "method": None, "params": None, "traceparent": TRACEPARENT},
    }
    assert messages.check_client(call)["req"]["traceparent"] == TRACEPARENT
    for bad in ("00-xyz", TRACEPARENT.upper(), "ff" + TRACEPARENT[2:], TRACEPARENT + "0", 7):
        with pytest.raises(messages.BadMessage, match="traceparent"):
            messages.check_client({**call, "req": {**call["req"], "traceparent": bad}})


def test_the_sdk_sends_its_current_span_only_when_it_has_one() -> None:
    trace = pytest.importorskip("opentelemetry.trace")
    assert tracecontext.current_traceparent() is None  # no span is current
    span = trace.NonRecordingSpan(
        trace.SpanContext(
            0x4BF92F3577B34DA6A3CE929D0E0E4736,
            0x00F067AA0BA902B7,
            is_remote=True,
            trace_flags=trace.TraceFlags(trace.TraceFlags.SAMPLED),
        )
    )
    with trace.use_span(span):
        assert tracecontext.current_traceparent() == TRACEPARENT
