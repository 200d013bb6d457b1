"""Fork-server rules that need no server: which containers are forked, what makes a new
template, which hooks a forked container still runs, and the fork-safety check."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from ketch._backends.base import ContainerSpec, ForkSpec
from ketch._backends.forkserver import _key, plain_start_reason
from ketch._runtime.loader import Preloaded
from ketch._utils.protocol.container import ContainerFunction
from ketch.cls import lifecycle_hooks


def _spec(**kw: Any) -> ContainerSpec:
    fork = ForkSpec(group="fn-1:3", preload={"function": {"tag": "f"}, "params": None})
    base: dict[str, Any] = {
        "container_id": "ta-1",
        "python": Path("/venv/bin/python"),
        "env": {"KETCH_CONTAINER_ID": "ta-1", "A": "1"},
        "cwd": Path("/src"),
        "fork": fork,
    }
    return ContainerSpec(**{**base, **kw})


def test_only_containers_on_the_hosts_network_without_limits_are_forked() -> None:
    assert plain_start_reason(_spec()) is None
    assert "network namespace" in (plain_start_reason(_spec(isolate_network=True)) or "")
    assert "network namespace" in (plain_start_reason(_spec(block_network=True)) or "")
    assert "volumes" in (plain_start_reason(_spec(volumes={"/data": "/tmp/v"})) or "")
    assert "limits" in (plain_start_reason(_spec(memory_mb=128)) or "")
    assert "limits" in (plain_start_reason(_spec(cpu=0.5)) or "")
    assert "GPU" in (plain_start_reason(_spec(gpus=("0",))) or "")


def test_a_template_is_shared_by_containers_and_replaced_when_what_it_imports_changes() -> None:
    one = _key(_spec(), dict(_spec().env))
    # Another container: only its own id differs.
    two = _key(_spec(container_id="ta-2"), {"KETCH_CONTAINER_ID": "ta-2", "A": "1"})
    assert one == two and one is not None and one.startswith("fn-1:3|")
    # A changed secret or image: a new template (the module may read it at import).
    assert _key(_spec(), {"KETCH_CONTAINER_ID": "ta-1", "A": "2"}) != one
    assert _key(_spec(python=Path("/other/bin/python")), dict(_spec().env)) != one
    # Something that cannot be described as JSON gets no template at all.
    odd = ForkSpec(group="g", preload={"function": object()})
    assert _key(_spec(fork=odd), {}) is None


class _Model:
    @staticmethod
    def _mark(snap: bool) -> Any:
        def deco(fn: Any) -> Any:
            fn._ketch_enter = {"snap": snap}
            return fn

        return deco

    @_mark(False)
    def plain(self) -> None: ...

    @_mark(True)
    def snapped(self) -> None: ...


def test_a_forked_container_runs_only_the_hooks_its_template_did_not() -> None:
    model = _Model()
    assert [h.__name__ for h in lifecycle_hooks(model, "_ketch_enter")] == ["snapped", "plain"]
    assert [h.__name__ for h in lifecycle_hooks(model, "_ketch_enter", False)] == ["plain"]
    assert [h.__name__ for h in lifecycle_hooks(model, "_ketch_enter", True)] == ["snapped"]


def test_preloaded_code_is_used_only_for_the_function_it_is() -> None:
    class FakeTarget:
        spec = ContainerFunction("f", "cls", "m", None, max_inputs=1, batched=False, web=None)

    pre = Preloaded(target=FakeTarget(), params=b"p1", snapped=True)  # type: ignore[arg-type]
    assert pre.serves(FakeTarget.spec, b"p1")
    assert not pre.serves(FakeTarget.spec, b"p2")  # its instance has other parameters
    assert not pre.serves(dataclasses.replace(FakeTarget.spec, tag="g"), b"p1")
    unsnapped = Preloaded(target=FakeTarget(), params=None, snapped=False)  # type: ignore[arg-type]
    assert unsnapped.serves(FakeTarget.spec, b"any")


@pytest.mark.parametrize(
    "setup, expect",
    [
        ("", "None"),
        (
            "import threading, time; threading.Thread(target=time.sleep, args=(30,), name='bg', "
            "daemon=True).start()",
            "thread",
        ),
    ],
)
def test_fork_hazard_sees_threads(setup: str, expect: str) -> None:
    code = f"{setup}\nfrom ketch._runtime.template import fork_hazard\nprint(fork_hazard())"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    assert expect in out
    if expect == "thread":
        assert "bg" in out
