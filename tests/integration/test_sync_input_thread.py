"""Sync calls on the input thread of a one-input container, answered from that thread
(`_runtime/direct.py`), and blocking `.remote()` sent from the caller's thread
(`Client.call_blocking`): cancellation, timeouts, threads and the SDK's hand-off."""

from __future__ import annotations

import concurrent.futures
import time
from pathlib import Path

import pytest

from ketch._client.client import Client
from ketch.exception import FunctionTimeoutError, InputCancellation
from supports import sync_thread as st


@pytest.mark.spec("T3")
def test_a_timed_out_sync_call_replaces_its_container(server: object) -> None:
    with st.app.run(show_logs=False):
        before = st.sleeper.remote(0)
        started = time.monotonic()
        with pytest.raises(FunctionTimeoutError):
            st.sleeper.remote(60)
        # Not before its limit (2 s), which counts from when it started to run.
        assert time.monotonic() - started >= 2
        # The thread cannot be interrupted: its container went, and a new one answers
        # now, not after the 60 s the old one would still be sleeping.
        assert st.sleeper.remote(0) != before


@pytest.mark.spec("B3")
def test_cancelling_a_running_sync_call_replaces_its_container(
    server: object, tmp_path: Path
) -> None:
    marker = tmp_path / "started"
    with st.app.run(show_logs=False):
        before = st.stall.remote(0)
        call = st.stall.spawn(60, str(marker))
        deadline = time.monotonic() + 60
        while not marker.exists():
            assert time.monotonic() < deadline, "the spawned call never started"
            time.sleep(0.05)
        call.cancel()
        with pytest.raises(InputCancellation):
            call.get(timeout=30)
        # Its thread cannot be interrupted: the container went, and a new one answers
        # now, not after the old one's 60 s.
        assert st.stall.remote(0) != before


def test_thread_locals_set_in_enter_are_seen_by_every_call(server: object) -> None:
    with st.app.run(show_logs=False):
        obj = st.Local()
        first = obj.read.remote()
        assert first["value"] == "set in @enter" and first["same_thread"] is True
        again = obj.read.remote()
        assert again == first  # the same container, the same thread


def test_sync_code_with_threads_and_event_loops_of_its_own(server: object) -> None:
    with st.app.run(show_logs=False):
        assert st.workers.remote(6) == [i * i for i in range(6)]
        assert st.runs_a_loop.remote(21) == 42
        assert st.runs_a_loop.remote(5) == 10  # the thread's loop was closed, not kept
        assert st.returns_a_coroutine.remote(1) == 2  # awaited for it, as before
        with pytest.raises(KeyError, match="nope"):
            st.fails.remote("nope")
        got = st.ids.remote()
        assert got["input"] and got["input"] != st.ids.remote()["input"]
        assert got["call"] is None
        spawned = st.ids.spawn().get(timeout=60)
        assert spawned["call"] is not None


def test_blocking_calls_from_many_threads_share_one_connection(server: object) -> None:
    small = [bytes([i % 256]) * (i * 37 % 4000) for i in range(40)]
    # Over the size a thread writes itself: these go through the SDK loop, between the
    # others' frames.
    large = [bytes([i]) * (200_000 + i) for i in range(8)]
    with st.app.run(show_logs=False):
        st.echo.remote(b"warm")
        client = Client._current
        assert client is not None and client.ready_for_blocking()
        payloads = small + large + small
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            results = list(pool.map(st.echo.remote, payloads))
        assert results == payloads
        assert Client._current is client and not client.pending
