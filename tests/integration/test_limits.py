"""cpu= and memory= on the local backend (S8): enforced with cgroups where the host lets
the server create them (cgroup v1 on this project's machines), else with an rlimit; a
container over its memory limit is killed and handled as a crash (R6)."""

from __future__ import annotations

from typing import Any

import pytest

from ketch._backends.limits import find_mounts
from ketch._client.deploy import ApiClient
from ketch._utils.aio import run_sync
from ketch.exception import ExecutionError
from supports import limited
from supports.web_helpers import wait_for


def _mechanism() -> str:
    mounts = find_mounts()
    mem = mounts.v1.get("memory")
    if mem is not None and mem.is_dir() and mem.stat().st_uid == 0 and _writable(mem):
        return "cgroup v1"
    return "other"


def _writable(path: Any) -> bool:
    import os

    return os.access(path, os.W_OK)


def _system_lines(app_id: str) -> list[str]:
    out = run_sync(ApiClient().call("GET", f"/v1/apps/{app_id}/logs"))
    return [e["line"] for e in out["entries"] if e["stream"] == "system"]


@pytest.mark.spec("S8", "R6")
def test_a_container_over_its_memory_limit_is_killed_and_reported(server: object) -> None:
    if _mechanism() != "cgroup v1":
        pytest.skip("this host gives the server no writable cgroup v1 memory controller")
    with limited.app.run(show_logs=False):
        app_id = limited.app.app_id
        assert app_id is not None
        assert limited.hog.remote(16) == 16  # within the limit: fine
        with pytest.raises(ExecutionError, match="more memory than its memory= limit"):
            limited.hog.remote(400)
        lines = wait_for(lambda: [ln for ln in _system_lines(app_id) if "out of memory" in ln], 30)
        assert any("limit of 128 MiB" in ln and "cgroup v1" in ln for ln in lines)
        assert any("enforced with cgroup v1" in ln for ln in _system_lines(app_id))
        # The pool goes on: the next call that fits gets a fresh container.
        assert limited.hog.remote(8) == 8


@pytest.mark.spec("S8", "A2")
def test_cpu_and_memory_limits_are_written_for_the_container(server: object) -> None:
    if _mechanism() != "cgroup v1":
        pytest.skip("this host gives the server no writable cgroup v1 hierarchy")
    with limited.app.run(show_logs=False):
        seen = limited.my_limits.remote()
    assert seen.get("cpu.cfs_quota_us") == "50000"
    # (request, limit): the limit is what is enforced.
    assert seen.get("memory.limit_in_bytes") == str(256 * 2**20)
