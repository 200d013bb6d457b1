"""The Ray backend (G1, G5) on a real two-node Ray cluster on this machine: a head and a
worker started once for the module by `ray.cluster_utils.Cluster`, each on a loopback
address of its own with one CPU and a custom resource naming it, and a ketch server of the
module's own with KETCH_BACKEND=ray against it. The acceptance calls run unchanged.

Ray's token authentication is off on purpose (RAY_AUTH_MODE=disabled): every node listens
on a loopback address of this machine only. Skipped, saying so, where Ray is not installed
(it is the optional extra `ketch[ray]`).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ray_cluster_utils = pytest.importorskip(
    "ray.cluster_utils", reason="the Ray backend needs the optional extra: pip install 'ketch[ray]'"
)

from conftest import ServerHandle, _close_client, _use_home  # noqa: E402

# Each node's loopback address; Ray keeps a 127.x address it is given (not 127.0.0.1).
HEAD_IP, WORKER_IP, JOINER_IP = "127.0.0.2", "127.0.0.3", "127.0.0.4"
_NODE_ARGS: dict[str, Any] = {
    "num_cpus": 1,
    "object_store_memory": 100 * 2**20,  # the machine is small and shared
}
_RAY_ENV = {
    "RAY_AUTH_MODE": "disabled",
    "RAY_USAGE_STATS_ENABLED": "0",
}


@contextlib.contextmanager
def _environ(values: dict[str, str]) -> Iterator[None]:
    before = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in before.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _loopback_ok(ip: str) -> bool:
    with socket.socket() as s:
        try:
            s.bind((ip, 0))
        except OSError:
            return False
    return True


@pytest.fixture(scope="module")
def cluster() -> Iterator[Any]:
    if not all(_loopback_ok(ip) for ip in (HEAD_IP, WORKER_IP, JOINER_IP)):
        pytest.skip(f"this machine cannot bind {HEAD_IP}..{JOINER_IP} (loopback /8)")
    with _environ(_RAY_ENV):
        c = ray_cluster_utils.Cluster(
            initialize_head=True,
            head_node_args={
                **_NODE_ARGS,
                "resources": {"head": 1},
                "node_ip_address": HEAD_IP,
                "include_dashboard": False,
                # A node that dies is marked dead within seconds, not Ray's default ~30 s.
                "_system_config": {
                    "health_check_initial_delay_ms": 0,
                    "health_check_period_ms": 500,
                    "health_check_failure_threshold": 4,
                },
            },
        )
        try:
            c.add_node(**_NODE_ARGS, resources={"worker": 1}, node_ip_address=WORKER_IP)
            c.wait_for_nodes()
            yield c
        finally:
            c.shutdown()  # only the processes it started; never `ray stop`


@pytest.fixture(scope="module")
def ray_server(cluster: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerHandle]:
    home = tmp_path_factory.mktemp("ketch-ray-home")
    previous = os.environ.get("KETCH_HOME")
    settings = {**_RAY_ENV, "KETCH_BACKEND": "ray", "KETCH_RAY_ADDRESS": cluster.address}
    with _environ(settings):
        _use_home(home)
        handle = ServerHandle(home)
        handle.start()
    try:
        yield handle
    finally:
        _close_client()
        handle.stop()
        if previous is None:
            os.environ.pop("KETCH_HOME", None)
        else:
            _use_home(Path(previous))


@pytest.fixture(scope="module")
def running(ray_server: ServerHandle) -> Iterator[None]:
    from supports.ray_app import app

    _use_home(ray_server.home)
    with app.run(show_logs=False):
        yield


@pytest.fixture
def rs(ray_server: ServerHandle, running: None) -> ServerHandle:
    _use_home(ray_server.home)
    return ray_server


def _containers(server: ServerHandle) -> dict[str, dict[str, Any]]:
    out = server.ketch("container", "list", "--json", check=True)
    return {row["container_id"]: row for row in json.loads(out.stdout)}


@pytest.mark.spec("G1")
def test_remote_runs_in_a_ray_actor_container(rs: ServerHandle, cluster: Any) -> None:
    from supports.ray_app import calls_home, square

    cid, value = square.remote(7)
    assert value == 49
    row = _containers(rs)[cid]
    nodes = {cluster.head_node.node_id, *(n.node_id for n in cluster.worker_nodes)}
    assert row["node"] in nodes
    assert row["pid"] is not None  # its process group's leader, on that node
    # Over TCP to the call port, never the server's unix socket: a node may be elsewhere.
    info = json.loads((rs.home / "server.json").read_text())
    assert calls_home.remote() == f"127.0.0.1:{info['call_port']}"


@pytest.mark.spec("G1")
@pytest.mark.spec("G5")
def test_map_lands_on_containers_of_both_nodes(rs: ServerHandle, cluster: Any) -> None:
    from supports.ray_app import spread

    results = list(spread.map(range(1000)))
    assert [value for _, value in results] == list(range(1, 1001))
    rows = _containers(rs)
    used = {cid for cid, _ in results}
    assert used <= set(rows), "every container that ran an input is listed"
    worker_ids = {n.node_id for n in cluster.worker_nodes}
    nodes = {rows[cid]["node"] for cid in used}
    assert nodes == {cluster.head_node.node_id, *worker_ids}


@pytest.mark.spec("G1")
def test_spawn_and_a_class_with_parameters(rs: ServerHandle) -> None:
    from supports.ray_app import Scaler, square

    call = square.spawn(12)
    _, value = call.get(timeout=60)
    assert value == 144
    _, tripled = Scaler(factor=3).scale.remote(5)  # type: ignore[call-arg]
    _, doubled = Scaler().scale.remote(5)
    assert (tripled, doubled) == (15, 10)


def _worker_ids(cluster: Any) -> list[str]:
    return [n.node_id for n in cluster.worker_nodes]


def _nodes(server: ServerHandle) -> dict[str, dict[str, Any]]:
    out = server.ketch("node", "list", "--json", check=True)
    return {row["node_id"]: row for row in json.loads(out.stdout)}


def _until(check: Any, what: str, timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got or time.monotonic() > deadline:
            assert got, f"timed out waiting for {what}"
            return got
        time.sleep(0.5)


@pytest.mark.spec("G5")
def test_node_list_shows_nodes_and_follows_a_join_and_a_leave(
    rs: ServerHandle, cluster: Any
) -> None:
    from supports.ray_app import spread

    spread.remote(0)
    nodes = _nodes(rs)
    head, (worker,) = cluster.head_node.node_id, _worker_ids(cluster)
    assert {head, worker} <= set(nodes)
    assert nodes[head]["address"] == HEAD_IP and nodes[worker]["address"] == WORKER_IP
    assert nodes[head]["alive"] and nodes[worker]["alive"]
    assert nodes[head]["cpus"] == 1 and nodes[head]["resources"] == {"head": 1}
    assert nodes[worker]["resources"] == {"worker": 1}
    # The two containers of `spread` (at least) run there, one on each node.
    assert nodes[head]["containers"] >= 1 and nodes[worker]["containers"] >= 1
    placed = [c for c in _containers(rs).values() if c["node"]]  # None: Ray still places it
    assert sum(n["containers"] for n in nodes.values()) == len(placed)

    joiner = cluster.add_node(**_NODE_ARGS, resources={"joiner": 1}, node_ip_address=JOINER_IP)
    try:
        row = _until(lambda: _nodes(rs).get(joiner.node_id), "the new node to be listed")
        assert row["alive"] and row["address"] == JOINER_IP and row["containers"] == 0
    finally:
        cluster.remove_node(joiner)
    _until(
        lambda: not _nodes(rs).get(joiner.node_id, {"alive": False})["alive"],
        "the removed node to be listed as not alive",
    )


@pytest.mark.spec("G1")
def test_a_container_no_node_can_hold_says_what_it_waits_for(rs: ServerHandle) -> None:
    from supports.ray_app import too_big

    call = too_big.spawn()

    def told() -> bool:
        logs = rs.ketch("app", "logs", "ray-app", "--tail", "200", check=True).stdout
        return "waiting for a Ray node with 8 CPU free" in logs

    _until(told, "the waiting reason in the app's logs")
    call.cancel()
    # It never ran; stopping the app later stops it while Ray still holds it unplaced.


@pytest.mark.spec("G1")
def test_server_start_flags_select_the_ray_backend(cluster: Any, tmp_path: Path) -> None:
    handle = ServerHandle(tmp_path / "home")
    # The flags alone choose the backend: neither setting is in the environment.
    assert "KETCH_BACKEND" not in os.environ and "KETCH_RAY_ADDRESS" not in os.environ
    with _environ(_RAY_ENV):
        bad = handle.ketch("server", "start", "--ray-address", cluster.address)
        assert bad.returncode != 0 and "--ray-address goes with --backend ray" in bad.stderr
        try:
            start = ("server", "start", "--daemon", "--backend", "ray")
            handle.ketch(*start, "--ray-address", cluster.address, check=True)
            nodes = json.loads(handle.ketch("node", "list", "--json", check=True).stdout)
        finally:
            handle.stop()
    assert {n["address"] for n in nodes if n["alive"]} == {HEAD_IP, WORKER_IP}


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


# Last in the module: it takes the worker node away (and puts a new one in its place).
@pytest.mark.spec("G4")
@pytest.mark.spec("R6")
def test_a_node_that_dies_mid_map_loses_no_input(rs: ServerHandle, cluster: Any) -> None:
    import concurrent.futures

    from supports.ray_app import slow

    slow.remote(-1)  # both containers up
    (worker,) = cluster.worker_nodes
    rows = _containers(rs)
    on_worker = [r for r in rows.values() if r["node"] == worker.node_id]
    assert any(r["function"] == "slow" for r in on_worker), rows
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        results = pool.submit(lambda: list(slow.map(range(200))))
        _until(
            lambda: any(
                r["function"] == "slow" and r["inflight"]
                for r in _containers(rs).values()
                if r["node"] == worker.node_id
            ),
            "an input in flight on the worker node",
        )
        cluster.remove_node(worker, allow_graceful=False)  # raylet and all: SIGKILL
        out = results.result(timeout=120)
    # Every input came back once, in order, and none was charged a retry (the function
    # has none: a charged one would have failed it).
    assert [x for _, x in out] == list(range(200))
    ran_on = {cid for cid, _ in out}
    assert ran_on & {r["container_id"] for r in on_worker}, "the lost node ran some inputs"
    # Its containers count as gone, and their processes are: the guard saw the raylet go.
    _until(lambda: not set(_containers(rs)) & {r["container_id"] for r in on_worker}, "cleanup")
    for r in on_worker:
        _until(lambda pid=r["pid"]: _gone(pid), f"container {r['container_id']} to exit")
    cluster.add_node(**_NODE_ARGS, resources={"worker": 1}, node_ip_address=WORKER_IP)
