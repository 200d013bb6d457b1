"""GPU scheduling (S7) on a server whose GPU inventory is FAKE (KETCH_FAKE_GPUS set to two
H100s and an A10G): no real GPU is used or claimed. Checked: containers get matching GPUs
to themselves through CUDA_VISIBLE_DEVICES, two containers get disjoint ones, a third
waits with its reason shown in `ketch app status`, GPUs come back when a container goes,
a type the host lacks never starts, and declaring a GPU blocks neither deploy nor a 401."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from supports import gpus
from supports.web_helpers import app_running, function_status, wait_for, web_url


@pytest.fixture
def fake_gpus(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KETCH_FAKE_GPUS", "H100,H100,A10G")


@pytest.fixture
def fake_gpu_server(fake_gpus: None, fresh_server: Any) -> Iterator[Any]:
    yield fresh_server


@pytest.mark.spec("S7")
def test_fake_inventory_containers_get_disjoint_gpus_and_a_third_waits(
    fake_gpu_server: Any, tmp_path: Path
) -> None:
    gate = str(tmp_path / "gate")
    with app_running(gpus.app) as app_id:
        first = [gpus.on_h100.spawn(gate) for _ in range(2)]
        assert wait_for(lambda: function_status(app_id)["on_h100"]["running"] == 2, 60)
        # A third container of another H100 function finds both H100s taken.
        waiting = gpus.other_h100.spawn()
        reason = wait_for(lambda: function_status(app_id)["other_h100"]["waiting"], 30)
        assert any("waiting: no GPU of type H100 free" in r for r in reason), reason
        shown = fake_gpu_server.ketch("app", "status", "gpus", check=True).stdout
        assert "no GPU of type H100" in shown
        as_json = json.loads(
            fake_gpu_server.ketch("app", "status", "gpus", "--json", check=True).stdout
        )
        assert as_json["functions"]["other_h100"]["queued"] == 1
        Path(gate).touch()
        seen = [c.get(timeout=60) for c in first]
        assert sorted(s["CUDA_VISIBLE_DEVICES"] for s in seen) == ["0", "1"]
        assert all(s["NVIDIA_VISIBLE_DEVICES"] == s["CUDA_VISIBLE_DEVICES"] for s in seen)
        assert all(s["KETCH_FAKE_GPUS"] == "1" for s in seen)  # told the GPUs are fake
        # Once on_h100's containers scale down (1 s window), their GPUs go to the waiter.
        got = waiting.get(timeout=60)
        assert got["CUDA_VISIBLE_DEVICES"] in ("0", "1")


@pytest.mark.spec("S7")
def test_fake_inventory_types_lists_and_no_gpu_containers(fake_gpu_server: Any) -> None:
    with app_running(gpus.app) as app_id:
        # A list takes the first type the host has: the A10G is index 2.
        assert gpus.a100_or_a10g.remote()["CUDA_VISIBLE_DEVICES"] == "2"
        # A function without a GPU sees none.
        assert gpus.no_gpu.remote()["CUDA_VISIBLE_DEVICES"] == ""
        # A type the host does not have: nothing starts, the input waits and says why.
        call = gpus.on_a100.spawn()
        reason = wait_for(lambda: function_status(app_id)["on_a100"]["waiting"], 30)
        assert any("no GPU of type A100-80GB on this host" in r for r in reason), reason
        assert function_status(app_id)["on_a100"]["containers"] == {
            "starting": 0,
            "idle": 0,
            "busy": 0,
            "draining": 0,
        }
        call.cancel()


@pytest.mark.spec("S7", "W15")
def test_a_gpu_endpoint_deploys_and_answers_401_without_any_gpu(server: object) -> None:
    # The session server has no GPU at all (unless the host really has one): deploying
    # works, and a request without a token is refused at once without starting anything.
    with gpus.app.run(show_logs=False):
        r = httpx.get(web_url(gpus.guarded), timeout=30)
        assert r.status_code == 401 and r.text.startswith("ketch:")
