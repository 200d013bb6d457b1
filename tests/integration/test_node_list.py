"""`ketch node list` on the local backend (G5): the one machine, with its resources and
the containers running on it; `ketch container list` names that node."""

from __future__ import annotations

import json
import os

import pytest

from conftest import ServerHandle


@pytest.mark.spec("G5")
def test_the_local_backend_is_one_node_running_every_container(server: ServerHandle) -> None:
    from supports.basic import app, square

    with app.run(show_logs=False):
        assert square.remote(3) == 9
        containers = json.loads(server.ketch("container", "list", "--json", check=True).stdout)
        nodes = json.loads(server.ketch("node", "list", "--json", check=True).stdout)
        table = server.ketch("node", "list", check=True).stdout
    assert containers and {c["node"] for c in containers} == {"local"}
    (node,) = nodes
    assert node["node_id"] == "local" and node["alive"] is True
    assert node["cpus"] == float(os.cpu_count() or 1) and node["memory_mb"] > 0
    assert node["containers"] == len(containers)
    assert "local" in table and "yes" in table
