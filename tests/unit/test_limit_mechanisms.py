"""Finding the cgroup hierarchies and choosing how limits are applied (S8), on fake /proc
and cgroup trees in a temporary directory (no real cgroup is touched)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ketch._backends.limits import Mounts, find_mounts, prepare


def _proc(tmp: Path, cgroup: str, mountinfo: str) -> Path:
    proc = tmp / "proc"
    proc.mkdir()
    (proc / "cgroup").write_text(cgroup)
    (proc / "mountinfo").write_text(mountinfo)
    return proc


@pytest.mark.spec("S8")
def test_v1_hierarchies_are_found_with_the_servers_own_group(tmp_path: Path) -> None:
    mem = tmp_path / "memory"
    (mem / "jobs" / "j1").mkdir(parents=True)
    cpu = tmp_path / "cpu"
    cpu.mkdir()
    proc = _proc(
        tmp_path,
        "4:memory:/jobs/j1\n1:cpu,cpuacct:/\n0::/\n",
        f"32 31 0:29 / {cpu} rw - cgroup cgroup rw,cpu,cpuacct\n"
        f"35 31 0:32 / {mem} rw - cgroup cgroup rw,memory\n",
    )
    mounts = find_mounts(proc)
    assert mounts.v1 == {"memory": mem / "jobs" / "j1", "cpu": cpu}
    assert mounts.v2 is None


@pytest.mark.spec("S8")
def test_v1_limits_are_written_and_the_groups_removed(tmp_path: Path) -> None:
    mem, cpu = tmp_path / "memory", tmp_path / "cpu"
    mem.mkdir()
    cpu.mkdir()
    lim = prepare("ta-1", 0.5, 128, Mounts(v1={"memory": mem, "cpu": cpu}))
    assert lim is not None and lim.mechanism == "cgroup v1"
    assert (mem / "ketch-ta-1" / "memory.limit_in_bytes").read_text() == str(128 * 2**20)
    assert (cpu / "ketch-ta-1" / "cpu.cfs_quota_us").read_text() == "50000"
    assert (cpu / "ketch-ta-1" / "cpu.cfs_period_us").read_text() == "100000"
    argv = lim.wrap(["python", "-m", "x"])
    assert (
        argv[:2] == ["/bin/sh", "-c"]
        and "cgroup.procs" in argv[2]
        and argv[-3:] == ["python", "-m", "x"]
    )
    assert "memory 128 MiB" in lim.describe() and "cgroup v1" in lim.describe()
    (mem / "ketch-ta-1" / "memory.oom_control").write_text("under_oom 0\noom_kill 1\n")
    assert lim.oom_killed()
    for f in list((mem / "ketch-ta-1").iterdir()) + list((cpu / "ketch-ta-1").iterdir()):
        f.unlink()  # a real cgroup directory empties itself; a plain one must be emptied
    lim.cleanup()
    assert not (mem / "ketch-ta-1").exists() and not (cpu / "ketch-ta-1").exists()


@pytest.mark.spec("S8")
def test_without_writable_cgroups_memory_falls_back_to_an_rlimit(tmp_path: Path) -> None:
    lim = prepare("ta-2", 1.0, 64, Mounts(v1={"memory": tmp_path / "missing"}))
    assert lim is not None and lim.mechanism == "rlimit"
    assert "ulimit -d 65536" in lim.wrap(["python"])[2]
    assert "cpu not limited" in lim.describe()
    assert prepare("ta-3", None, None, Mounts()) is None
