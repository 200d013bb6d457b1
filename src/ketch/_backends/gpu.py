"""The GPUs of this host (discovered with nvidia-smi) and the pure rule that gives them to
containers.

Type matching (SPEC S7), in one place so that docs and code agree: a request such as
``"A100-80GB"`` is split on ``-`` into tokens (``A100``, ``80GB``); a device matches when
every token is one of the words of its name (split on spaces and ``-``, upper case, so
``"NVIDIA A100-SXM4-80GB"`` has ``NVIDIA A100 SXM4 80GB``). A size token (``80GB``) also
matches a device whose total memory is within 10 % of that size. ``any`` matches every
device; a trailing ``!`` (Modal's "exactly this type") changes nothing, as ketch never
substitutes another type. A list of requests means the first of them that can be met.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

# For tests of the scheduling logic only: a comma-separated list of GPU names that the
# server takes as its inventory instead of asking nvidia-smi (say "H100,H100,A10G").
# Containers are told the inventory is fake; nothing claims real GPUs from it.
FAKE_ENV = "KETCH_FAKE_GPUS"

_SIZE = re.compile(r"^(\d+)GB$")


@dataclass(frozen=True)
class Gpu:
    index: int
    name: str
    memory_mb: int = 0


@dataclass(frozen=True)
class Inventory:
    devices: tuple[Gpu, ...]
    fake: bool = False  # taken from KETCH_FAKE_GPUS, not from the hardware

    def describe(self) -> str:
        if not self.devices:
            return "none"
        counts: dict[str, int] = {}
        for d in self.devices:
            counts[d.name] = counts.get(d.name, 0) + 1
        return ", ".join(f"{name} x{n}" for name, n in counts.items())


def discover(env: Mapping[str, str] | None = None) -> Inventory:
    """The host's GPUs: the fake list when KETCH_FAKE_GPUS is set, else nvidia-smi's."""
    env = os.environ if env is None else env
    fake = env.get(FAKE_ENV, "").strip()
    if fake:
        names = [n.strip() for n in fake.split(",") if n.strip()]
        return Inventory(tuple(Gpu(i, n) for i, n in enumerate(names)), fake=True)
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return Inventory(())
    try:
        out = subprocess.run(
            [smi, "--query-gpu=index,name,memory.total", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=20,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return Inventory(())
    if out.returncode != 0:
        return Inventory(())
    return Inventory(parse_nvidia_smi(out.stdout))


def parse_nvidia_smi(text: str) -> tuple[Gpu, ...]:
    """Rows of `index, name, memory.total` (with or without units); bad rows are skipped."""
    found = []
    for line in text.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) < 3 or not parts[0].isdigit():
            continue
        name = ", ".join(parts[1:-1]).strip()
        mem = parts[-1].upper().removesuffix("MIB").strip()
        found.append(Gpu(int(parts[0]), name, int(mem) if mem.isdigit() else 0))
    return tuple(sorted(found, key=lambda g: g.index))


def _words(name: str) -> set[str]:
    return {w for w in re.split(r"[\s\-_/]+", name.upper()) if w}


def _parse(request: str) -> tuple[str, int]:
    kind, _, count = request.partition(":")
    return kind.strip().rstrip("!").upper(), int(count) if count else 1


def matches(kind: str, gpu: Gpu) -> bool:
    """Whether the device is of the requested type (the rule in the module docstring)."""
    kind = kind.strip().rstrip("!").upper()
    if kind == "ANY":
        return True
    words = _words(gpu.name)
    for token in (t for t in kind.split("-") if t):
        if token in words:
            continue
        size = _SIZE.match(token)
        if (
            size
            and gpu.memory_mb
            and abs(gpu.memory_mb / 1024 - int(size[1])) <= 0.1 * int(size[1])
        ):
            continue
        return False
    return True


def _options(request: str | Sequence[str]) -> list[str]:
    return [request] if isinstance(request, str) else list(request)


def assign(
    request: str | Sequence[str], inventory: Sequence[Gpu], in_use: set[int] | frozenset[int]
) -> tuple[int, ...] | None:
    """Indices of free devices meeting the request (the first option of a list that can be
    met), the same model where a count above one allows it; None when none can be had now."""
    for option in _options(request):
        kind, count = _parse(option)
        free = [g for g in inventory if g.index not in in_use and matches(kind, g)]
        if len(free) < count:
            continue
        by_name: dict[str, list[Gpu]] = {}
        for g in free:
            by_name.setdefault(g.name, []).append(g)
        same = next((gs for gs in by_name.values() if len(gs) >= count), free)
        return tuple(g.index for g in same[:count])
    return None


def could_ever_fit(request: str | Sequence[str], inventory: Sequence[Gpu]) -> bool:
    """Whether the host has enough matching devices at all (busy or not)."""
    for option in _options(request):
        kind, count = _parse(option)
        if sum(1 for g in inventory if matches(kind, g)) >= count:
            return True
    return False


def request_text(request: str | Sequence[str]) -> str:
    return request if isinstance(request, str) else " or ".join(request)
