"""What call records and latency histograms cost on the request path (O2, O3).

    .venv/bin/python bench/ops_records.py [--n 200000]

Times, in one process, the hook the gateway runs when a web request ends
(`CallRecorder.web_done`: a histogram observation and an append to the in-memory buffer)
and the hook for a finished function input (`input_done`), each against an empty function
call as the floor; then the server's 1 s tick writing a full buffer (1,000 records per app,
the default `call_records`) to SQLite. Prints µs per call.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from ketch._server.images import BuiltImage
from ketch._server.model import FunctionDef, Input
from ketch._server.records import CallRecorder
from ketch._server.store import Store
from ketch._utils.protocol.spec import ImageSpec, OptionsSpec, StoredFunction


def _per_call(fn, n: int) -> float:  # type: ignore[no-untyped-def]
    start = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - start) / n * 1e6


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=200_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(Path(tmp) / "k.db")
        recorder = CallRecorder(store, 1000)
        img = BuiltImage(hash="", python=Path(), env={}, workdir=None, root=Path())
        spec = StoredFunction(
            tag="page", module="m", options=OptionsSpec(), image=ImageSpec(python_version="3.12")
        )
        fdef = FunctionDef("fu-1", "ap-1", "bench", "main", 1, "page", spec, img, None, None)
        inp = Input("wr-1", fdef, "k", {}, "web", None)
        inp.started = time.monotonic()

        def noop() -> None:
            pass

        def web() -> None:
            recorder.web_done(inp, "ok", 200)

        def call() -> None:
            recorder.input_done(inp, True)

        for _ in range(3):
            floor = _per_call(noop, args.n)
            web_us = _per_call(web, args.n)
            call_us = _per_call(call, args.n)
            print(
                f"floor {floor:.3f} µs  web_done {web_us - floor:.2f} µs  "
                f"input_done {call_us - floor:.2f} µs (net of the floor)"
            )
        for i in range(1000):
            inp.iid = f"wr-{i}"
            recorder.web_done(inp, "ok", 200)
        start = time.perf_counter()
        written = recorder.flush()
        print(f"flush of {written} records: {(time.perf_counter() - start) * 1e3:.2f} ms")
        store.close()


if __name__ == "__main__":
    main()
