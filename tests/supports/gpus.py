"""GPU functions for the scheduling tests (S7). The tests run them against a FAKE GPU
inventory (KETCH_FAKE_GPUS): what is checked is which GPUs a container is given, not that
a GPU computes anything."""

import os
import time

import ketch

app = ketch.App("gpus")


def _seen() -> dict[str, str | None]:
    return {
        k: os.environ.get(k)
        for k in ("CUDA_VISIBLE_DEVICES", "NVIDIA_VISIBLE_DEVICES", "KETCH_FAKE_GPUS")
    }


def _wait_for(gate: str) -> None:
    deadline = time.monotonic() + 120
    while not os.path.exists(gate) and time.monotonic() < deadline:
        time.sleep(0.02)


@app.function(gpu="h100", scaledown_window=1)
def on_h100(gate: str) -> dict[str, str | None]:
    _wait_for(gate)
    return _seen()


@app.function(gpu="H100")
def other_h100() -> dict[str, str | None]:
    return _seen()


@app.function(gpu="A100-80GB")
def on_a100() -> dict[str, str | None]:
    return _seen()


@app.function(gpu=["A100", "A10G"])
def a100_or_a10g() -> dict[str, str | None]:
    return _seen()


@app.function()
def no_gpu() -> dict[str, str | None]:
    return _seen()


@app.function(gpu="A100")
@ketch.fastapi_endpoint(requires_proxy_auth=True)
def guarded() -> str:
    return "never without a token and a GPU"
