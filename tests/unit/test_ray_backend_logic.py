"""Pure parts of the Ray backend (G1, G2, G5): the actor's options from a container's
spec, exit reasons, the address containers dial, the version check and the node rows.
No cluster: the integration tests (test_ray_backend.py) run the real thing."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import pytest

from ketch._backends.base import EXITED, KILLED, ContainerSpec, load_backend
from ketch._backends.ray_actor import version_refusal
from ketch._server.api.nodes import node_rows
from ketch.config import Config
from ketch.exception import InvalidError

ray_backend = pytest.importorskip(
    "ketch._backends.ray", reason="the Ray backend needs the optional extra ketch[ray]"
)


def _spec(**kw: Any) -> ContainerSpec:
    return ContainerSpec(
        container_id="ta-abc", python=Path("/bin/python3"), env={}, cwd=Path("/"), **kw
    )


@pytest.mark.spec("G1")
def test_actor_options_carry_the_functions_resources() -> None:
    opts = ray_backend.actor_options(_spec(cpu=2.0, memory_mb=512, gpus=("0", "1")))
    assert opts["name"] == "ketch-ta-abc"
    assert (opts["num_cpus"], opts["num_gpus"], opts["memory"]) == (2.0, 2, 512 * 2**20)
    # ketch's scheduler replaces a dead container; Ray must not restart or retry it.
    assert opts["max_restarts"] == 0 and opts["max_task_retries"] == 0
    plain = ray_backend.actor_options(_spec())
    assert plain["num_cpus"] == ray_backend.DEFAULT_CPU and plain["num_gpus"] == 0
    assert "memory" not in plain


def test_what_an_actor_waits_for_in_words() -> None:
    opts = ray_backend.actor_options(_spec(cpu=0.5, memory_mb=512, gpus=("0",)))
    assert ray_backend.describe_resources(opts) == "0.5 CPU, 512 MiB memory, 1 GPU"
    assert ray_backend.describe_resources(ray_backend.actor_options(_spec())) == "0.125 CPU"


def test_exit_reasons() -> None:
    assert ray_backend.exit_reason(0, killed=False) == EXITED
    assert ray_backend.exit_reason(1, killed=False) == EXITED
    assert ray_backend.exit_reason(0, killed=True) == KILLED
    assert ray_backend.exit_reason(-signal.SIGKILL, killed=False) == KILLED
    assert ray_backend.exit_reason(None, killed=False) == KILLED  # lost with its node


def test_containers_dial_the_servers_address_or_its_node_address() -> None:
    assert ray_backend.call_host("127.0.0.1", "10.0.0.5") == "127.0.0.1"
    assert ray_backend.call_host("10.0.0.9", "10.0.0.5") == "10.0.0.9"
    assert ray_backend.call_host("0.0.0.0", "10.0.0.5") == "10.0.0.5"
    assert ray_backend.call_host("::", "10.0.0.5") == "10.0.0.5"
    assert ray_backend.call_host("ketch.internal", "10.0.0.5") == "ketch.internal"


@pytest.mark.spec("G2")
def test_a_node_with_another_ketch_version_is_refused_naming_both() -> None:
    assert version_refusal("10.0.0.7", "0.1.0", "0.1.0") is None
    why = version_refusal("10.0.0.7", "0.0.9", "0.1.0")
    assert why is not None and "10.0.0.7" in why and "0.0.9" in why and "0.1.0" in why


@pytest.mark.spec("G5")
def test_node_rows_count_the_containers_on_each_node() -> None:
    nodes = [
        {"node_id": "a", "alive": True},
        {"node_id": "b", "alive": False},
        {"node_id": "c", "alive": True},
    ]
    rows = node_rows(nodes, ["a", "a", "c", None])  # None: a container not placed yet
    assert [r["containers"] for r in rows] == [2, 0, 1]
    assert rows[1]["alive"] is False


def test_the_backend_is_chosen_by_setting_and_unknown_names_are_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("KETCH_BACKEND", "ray")
    monkeypatch.setenv("KETCH_RAY_ADDRESS", "10.0.0.1:6379")
    cfg = Config.load()
    assert (cfg.backend, cfg.ray_address) == ("ray", "10.0.0.1:6379")
    with pytest.raises(InvalidError, match=r"unknown backend 'nomad'.*'local', 'ray'"):
        load_backend("nomad", cfg)


def test_an_address_nothing_answers_at_is_refused_at_once() -> None:
    import socket

    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        port = listening.getsockname()[1]
        ray_backend._check_reachable(f"127.0.0.1:{port}")  # something answers: no error
    # The port is closed now.
    with pytest.raises(InvalidError, match=rf"cannot reach the Ray cluster at '127.0.0.1:{port}'"):
        ray_backend._check_reachable(f"127.0.0.1:{port}")
    ray_backend._check_reachable("auto")  # left to Ray
