"""GPUs (S7): a GPU function's container holds its GPUs; with none free its inputs wait,
saying why, and start when one frees."""

from __future__ import annotations

import pytest

from ketch._backends.gpu import Gpu, Inventory
from ketch._server.gpu_alloc import GpuAllocator

from .fakes import Sim, run

pytestmark = [pytest.mark.spec("S7")]


def _sim(*names: str) -> Sim:
    sim = Sim()
    # The host's GPUs, as nvidia-smi would list them.
    devices = tuple(Gpu(i, name, 81920) for i, name in enumerate(names))
    sim.sched.gpus = GpuAllocator(Inventory(devices))
    return sim


def test_a_gpu_container_sees_only_the_gpu_it_holds() -> None:
    async def body() -> None:
        sim = _sim("NVIDIA H100 80GB HBM3", "NVIDIA H100 80GB HBM3")
        f = sim.deploy(gpu="H100")
        sim.submit(f, "in-1")
        await sim.settle()
        (c,) = sim.backend.containers
        assert c.spec.gpus == ("0",)
        assert c.spec.env["CUDA_VISIBLE_DEVICES"] == "0"
        assert sim.sched.gpu_owner == {0: c.cid}

    run(body())


def test_a_gpu_function_waits_for_a_busy_gpu_and_starts_when_it_frees() -> None:
    async def body() -> None:
        sim = _sim("NVIDIA H100 80GB HBM3")
        first = sim.deploy("first", gpu="H100", scaledown_window=10)
        second = sim.deploy("second", gpu="H100")
        sim.submit(first, "in-1")
        (c1,) = await sim.start_ready()
        sim.submit(second, "in-2")
        await sim.settle()
        assert len(sim.backend.containers) == 1, "started without a free GPU"
        reason = sim.pool(second).waiting_reason
        assert reason is not None and "no GPU of type H100 free" in reason
        c1.out("in-1")
        await sim.settle()
        await sim.tick()
        assert len(sim.backend.containers) == 1  # still held by the idle container
        await sim.advance(10)
        await sim.tick()  # scale-down: the GPU is released
        assert c1.handle.exited
        (c2,) = await sim.start_ready()
        assert c2.spec.gpus == ("0",) and c2.inputs() == ["in-2"]
        assert sim.sched.gpu_owner == {0: c2.cid}

    run(body())


def test_a_gpu_type_the_host_lacks_waits_and_says_so() -> None:
    async def body() -> None:
        sim = _sim("NVIDIA A10G")
        f = sim.deploy(gpu="H100")
        sim.submit(f, "in-1")
        await sim.settle()
        assert sim.backend.containers == []
        reason = sim.pool(f).waiting_reason
        assert reason is not None and "on this host" in reason and "A10G" in reason

    run(body())


def test_a_cpu_function_on_a_gpu_host_sees_no_gpu() -> None:
    async def body() -> None:
        sim = _sim("NVIDIA H100 80GB HBM3")
        f = sim.deploy()
        sim.submit(f, "in-1")
        await sim.settle()
        (c,) = sim.backend.containers
        assert c.spec.gpus == () and c.spec.env["CUDA_VISIBLE_DEVICES"] == ""
        assert sim.sched.gpu_owner == {}

    run(body())
