"""The keywords of `@app.function` and `@app.cls`, as a type checker sees them.

At run time the decorators take `**kwargs` and `validate_function_options` checks them
(an unknown name is an `InvalidError` with a suggestion, as on Modal); annotated with
`Unpack[FunctionKwargs]`, the same names and types reach mypy and pyright, so that a typo
such as `timout=5` is reported before anything runs. `tests/unit/test_options.py` pins
these keys to the ones the validator knows, so the two cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Any, TypedDict

if TYPE_CHECKING:
    from ketch.image import Image
    from ketch.retries import Retries
    from ketch.secret import Secret


class FunctionKwargs(TypedDict, total=False):
    # What ketch does with each is in SPEC.md (A3-A8) and docs; the types are Modal's.
    image: Image
    secrets: Sequence[Secret]
    env: dict[str, str | None]
    gpu: str | list[str] | None
    cpu: float | tuple[float, float] | None
    memory: int | tuple[int, int] | None
    timeout: int
    startup_timeout: int | None
    retries: int | Retries | None
    min_containers: int
    max_containers: int | None
    buffer_containers: int
    scaledown_window: int
    serialized: bool
    name: str | None
    schedule: Any
    volumes: dict[str | PurePosixPath, Any]  # mount path -> ketch.Volume
    include_source: bool | None
    enable_memory_snapshot: bool
    block_network: bool
    is_generator: bool | None
    # Accepted so that Modal scripts run; they change nothing here (a warning says so).
    region: str | Sequence[str] | None
    cloud: str | None
    nonpreemptible: bool
    proxy: Any
    i6pn: bool
    ephemeral_disk: int | None
    restrict_modal_access: bool
    allow_cross_region_volumes: bool
    experimental_options: dict[str, Any] | None
    # Modal's old names (a dated deprecation warning names the new one).
    keep_warm: int | None
    concurrency_limit: int | None
    container_idle_timeout: int | None
    allow_concurrent_inputs: int | None
    # Refused unless empty: ketch cannot provide them.
    mounts: Sequence[Any]
    network_file_systems: dict[Any, Any]
    cloud_bucket_mounts: dict[Any, Any]
    # Retire a container after this many inputs (Modal's two spellings).
    single_use_containers: bool
    max_inputs: int | None
