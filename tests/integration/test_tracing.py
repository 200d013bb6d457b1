"""OpenTelemetry export (O5): a server with KETCH_OTEL_ENDPOINT sends its spans over
OTLP/HTTP to a receiver started here, which decodes them with opentelemetry-proto. A
caller's `traceparent` (an HTTP header; the SDK's current context for `.remote()`) is the
parent of ketch's span, which has queue, container start and execution children, and the
user code in the container sees ketch's execution span as its current context."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

pytest.importorskip("opentelemetry.sdk")
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from conftest import ServerHandle
from supports import traced as t

CALLER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CHILDREN = {"ketch.queue", "ketch.container.start", "ketch.execute"}


class Receiver:
    """An OTLP/HTTP endpoint: keeps every span and log record posted to it, decoded."""

    def __init__(self) -> None:
        self.spans: list[dict[str, Any]] = []
        self.logs: list[dict[str, Any]] = []
        self.requests = 0
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                receiver.take(self.path, body)
                reply = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args: Any) -> None:
                pass

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.http.server_address[1]}"
        self.thread = threading.Thread(target=self.http.serve_forever, daemon=True)
        self.thread.start()

    def take(self, path: str, body: bytes) -> None:
        with self.lock:
            self.requests += 1
            if path == "/v1/traces":
                req = ExportTraceServiceRequest.FromString(body)
                for rs in req.resource_spans:
                    for ss in rs.scope_spans:
                        for s in ss.spans:
                            self.spans.append(
                                {
                                    "name": s.name,
                                    "trace_id": s.trace_id.hex(),
                                    "span_id": s.span_id.hex(),
                                    "parent": s.parent_span_id.hex(),
                                    "start": s.start_time_unix_nano,
                                    "end": s.end_time_unix_nano,
                                    "status": s.status.code,
                                    "attrs": {a.key: _value(a.value) for a in s.attributes},
                                }
                            )
            elif path == "/v1/logs":
                logs = ExportLogsServiceRequest.FromString(body)
                for rl in logs.resource_logs:
                    for sl in rl.scope_logs:
                        for r in sl.log_records:
                            self.logs.append(
                                {
                                    "body": r.body.string_value,
                                    "attrs": {a.key: _value(a.value) for a in r.attributes},
                                }
                            )

    def trace(
        self, caller_span: str, timeout: float = 60
    ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """ketch's span under `caller_span` and its children, once all three are in."""
        deadline = time.monotonic() + timeout
        while True:
            with self.lock:
                roots = [s for s in self.spans if s["parent"] == caller_span]
                kids = [s for s in self.spans if roots and s["parent"] == roots[0]["span_id"]]
            if roots and {k["name"] for k in kids} >= CHILDREN:
                return roots[0], kids
            if time.monotonic() > deadline:
                raise AssertionError(f"no complete trace under {caller_span}; got {self.spans}")
            time.sleep(0.05)

    def close(self) -> None:
        self.http.shutdown()
        self.http.server_close()


def _value(v: Any) -> Any:
    kind = v.WhichOneof("value")
    return getattr(v, kind) if kind else None


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


@pytest.fixture
def traced_server(
    receiver: Receiver, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> ServerHandle:
    monkeypatch.setenv("KETCH_OTEL_ENDPOINT", receiver.url)
    # Batches leave every 100 ms rather than every 5 s: the test waits for them.
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "100")
    monkeypatch.setenv("OTEL_BLRP_SCHEDULE_DELAY", "100")
    handle: ServerHandle = request.getfixturevalue("fresh_server")
    return handle


def _check_tree(root: dict[str, Any], kids: list[dict[str, Any]], function: str) -> dict[str, Any]:
    assert root["trace_id"] == CALLER_TRACE
    assert root["attrs"]["ketch.app"] == "ketch-traced"
    assert root["attrs"]["ketch.function"] == function
    assert root["attrs"]["ketch.container"].startswith("ta-")
    by_name = {k["name"]: k for k in kids}
    assert all(k["trace_id"] == CALLER_TRACE for k in kids)
    start = by_name["ketch.container.start"]
    assert start["attrs"]["ketch.container.start"] == "cold"  # the first request starts one
    assert start["attrs"]["ketch.container.start_method"] in ("fork", "plain")
    assert start["attrs"]["ketch.container"] == root["attrs"]["ketch.container"]
    assert start["end"] > start["start"]
    execute = by_name["ketch.execute"]
    assert root["start"] <= by_name["ketch.queue"]["start"] <= execute["start"] <= execute["end"]
    assert execute["end"] <= root["end"]
    return execute


@pytest.mark.spec("O5")
def test_cold_web_request_continues_the_callers_trace(
    traced_server: ServerHandle, receiver: Receiver
) -> None:
    caller_span = "00f067aa0ba902b7"
    with t.app.run(show_logs=False):
        url = t.web_seen.get_web_url()
        assert url is not None
        resp = httpx.get(
            url, headers={"traceparent": f"00-{CALLER_TRACE}-{caller_span}-01"}, timeout=120
        )
        assert resp.status_code == 200, resp.text
        seen = resp.json()
        root, kids = receiver.trace(caller_span)
    assert root["name"] == "GET web_seen"
    assert root["attrs"]["http.response.status_code"] == 200
    assert root["attrs"]["http.request.method"] == "GET"
    execute = _check_tree(root, kids, "web_seen")
    # The container's request carried ketch's execution span: the handler (through
    # FastAPI's OpenTelemetry support) runs in the caller's trace, under that span.
    assert seen == {"otel": True, "trace_id": CALLER_TRACE, "span_id": execute["span_id"]}
    # Container output and platform events went out as OTLP logs too.
    deadline = time.monotonic() + 30
    while not any(r["body"] == "container started" for r in receiver.logs):
        assert time.monotonic() < deadline, receiver.logs
        time.sleep(0.05)


@pytest.mark.spec("O5")
def test_remote_call_continues_the_sdk_callers_trace(
    traced_server: ServerHandle, receiver: Receiver
) -> None:
    from opentelemetry import trace
    from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

    caller_span = "b7ad6b7169203331"
    caller = SpanContext(
        int(CALLER_TRACE, 16),
        int(caller_span, 16),
        is_remote=True,
        trace_flags=TraceFlags(TraceFlags.SAMPLED),
    )
    with t.app.run(show_logs=False), trace.use_span(NonRecordingSpan(caller)):
        seen = t.call_seen.remote()
        root, kids = receiver.trace(caller_span)
    assert root["name"] == "call call_seen"
    assert root["attrs"]["ketch.status"] == "ok"
    execute = _check_tree(root, kids, "call_seen")
    # The input message carried the context; the runtime made it current for user code.
    assert seen == {"otel": True, "trace_id": CALLER_TRACE, "span_id": execute["span_id"]}


@pytest.mark.spec("O5")
def test_a_bad_traceparent_starts_a_new_trace(
    traced_server: ServerHandle, receiver: Receiver
) -> None:
    """A malformed header is ignored (a trace of ketch's own), never an error."""
    with t.app.run(show_logs=False):
        url = t.web_seen.get_web_url()
        assert url is not None
        resp = httpx.get(url, headers={"traceparent": "00-not-a-trace-01"}, timeout=120)
        assert resp.status_code == 200, resp.text
        seen = resp.json()
        deadline = time.monotonic() + 60
        while True:
            with receiver.lock:
                roots = [s for s in receiver.spans if s["name"] == "GET web_seen"]
            if roots:
                break
            assert time.monotonic() < deadline, receiver.spans
            time.sleep(0.05)
    assert roots[0]["parent"] == ""
    assert seen["trace_id"] == roots[0]["trace_id"] != CALLER_TRACE
