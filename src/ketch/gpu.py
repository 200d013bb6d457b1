"""`ketch.gpu` (Modal's deprecated `modal.gpu` objects): `gpu=ketch.gpu.A10G(count=2)`.

Each object is the GPU string it stands for (`"A10G:2"`), so it goes wherever `gpu=`
takes a string; making one warns that the string is the way to write it.
"""

from __future__ import annotations

from typing import ClassVar

from ketch.exception import InvalidError, deprecation_warning

__all__ = ["A10G", "A100", "B200", "H100", "H200", "L4", "L40S", "T4", "Any"]

_DEPRECATED_ON = (2025, 2, 7)  # when Modal deprecated these objects
_A100_SIZES = ("40GB", "80GB")


class _GPUConfig(str):
    """A GPU request spelled as an object; its value is ketch's GPU string."""

    gpu_type: ClassVar[str]

    def __new__(cls, *, count: int = 1) -> _GPUConfig:
        return cls._make(cls.gpu_type, count)

    @classmethod
    def _make(cls, gpu_type: str, count: int) -> _GPUConfig:
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise InvalidError(f"{cls.__name__}(count=...) takes a number of GPUs, got {count!r}")
        value = gpu_type if count == 1 else f"{gpu_type}:{count}"
        deprecation_warning(
            _DEPRECATED_ON,
            f'gpu=ketch.gpu.{cls.__name__}(...) is deprecated; write gpu="{value}" instead',
        )
        return str.__new__(cls, value)


class T4(_GPUConfig):
    """NVIDIA T4 (16 GB)."""

    gpu_type = "T4"


class L4(_GPUConfig):
    """NVIDIA L4 (24 GB)."""

    gpu_type = "L4"


class A10G(_GPUConfig):
    """NVIDIA A10G (24 GB)."""

    gpu_type = "A10G"


class A100(_GPUConfig):
    """NVIDIA A100; `size="80GB"` asks for the 80 GB model, `"40GB"` for the 40 GB one."""

    gpu_type = "A100"

    def __new__(cls, *, count: int = 1, size: str | None = None) -> A100:
        if size is not None and size not in _A100_SIZES:
            raise InvalidError(f"A100(size=...) takes '40GB' or '80GB', got {size!r}")
        gpu_type = cls.gpu_type if size is None else f"{cls.gpu_type}-{size}"
        made = cls._make(gpu_type, count)
        assert isinstance(made, A100)
        return made


class L40S(_GPUConfig):
    """NVIDIA L40S (48 GB)."""

    gpu_type = "L40S"


class H100(_GPUConfig):
    """NVIDIA H100 (80 GB)."""

    gpu_type = "H100"


class H200(_GPUConfig):
    """NVIDIA H200 (141 GB)."""

    gpu_type = "H200"


class B200(_GPUConfig):
    """NVIDIA B200 (192 GB)."""

    gpu_type = "B200"


class Any(_GPUConfig):
    """Any GPU the host has."""

    gpu_type = "any"
