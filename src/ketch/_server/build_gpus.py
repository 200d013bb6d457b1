"""GPUs lent to image build steps (`run_commands(gpu=)`, `run_function(gpu=)`): taken
from the allocator containers take theirs from (S7), so a build step and a container never
hold the same device, and a step sees its GPUs exactly as a container would."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from ketch._backends import gpu as gpus
from ketch._backends.sandbox import gpu_devices
from ketch._images.bwrap import Bind
from ketch._images.process import ImageBuildError, LogFn
from ketch._server.gpu_alloc import GpuAllocator

__all__ = ["BuildGpus"]

# How often a step that waits for busy GPUs looks again. Releases are rare events and a
# build step runs for seconds at least, so polling costs nothing worth an event here.
_POLL_S = 0.25


class BuildGpus:
    """The `GpuLender` of the root-filesystem builder: while entered, the step holds GPUs
    matching its request; `freed` tells the scheduler when they come back."""

    def __init__(self, allocator: GpuAllocator, freed: Callable[[], None]) -> None:
        self._allocator = allocator
        self._freed = freed

    @contextlib.asynccontextmanager
    async def __call__(
        self, request: str | tuple[str, ...], step: str, log: LogFn
    ) -> AsyncIterator[tuple[dict[str, str], list[Bind]]]:
        wanted: str | list[str] = list(request) if isinstance(request, tuple) else request
        holder = f"build-{uuid.uuid4().hex[:12]}"
        held = self._allocator.take(wanted, holder)
        if held is None:
            inventory = self._allocator.inventory()
            if not gpus.could_ever_fit(wanted, inventory.devices):
                raise ImageBuildError(
                    step,
                    "",
                    f"the step needs GPU {gpus.request_text(wanted)}, which this host does "
                    f"not have (GPUs here: {inventory.describe()})",
                )
            log(f"==> {self._allocator.why_waiting(wanted)}")
        while held is None:
            await asyncio.sleep(_POLL_S)
            held = self._allocator.take(wanted, holder)
        try:
            env, note = self._allocator.env(held)
            if note is not None:
                log(f"==> {note}")
            devices = gpu_devices(tuple(str(i) for i in held))
            yield env, [Bind(Path(d), d, device=True) for d in devices]
        finally:
            self._allocator.release(holder, held)
            self._freed()
