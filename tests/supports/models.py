"""A parametrized class: one container pool per parameter set, @enter once, @exit on stop.
Containers are named by `supports.ident` (a sandboxed container's bare pid is not unique)."""

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import ketch
from supports import ident

app = ketch.App("ketch-models")


@app.cls(max_containers=1, scaledown_window=60)
class Model:
    name: str = ketch.parameter(default="base")
    size: int = ketch.parameter(default=1)
    fast: bool = ketch.parameter(default=False)
    key: bytes = ketch.parameter(default=b"")
    outdir: str = ketch.parameter(default="")

    @ketch.enter()
    def load(self) -> None:
        self.enter_calls = getattr(self, "enter_calls", 0) + 1
        self.served = 0
        if self.outdir:
            Path(self.outdir, f"enter-{ident.file_name(ident.me())}").write_text(self.name)

    @ketch.method()
    def predict(self, x: int) -> dict[str, Any]:
        self.served += 1
        return {
            "pid": ident.me(),
            "x": x,
            "name": self.name,
            "size": self.size,
            "fast": self.fast,
            "key": self.key,
            "enter_calls": self.enter_calls,
            "served": self.served,
        }

    @ketch.method()
    def stream(self, n: int) -> Iterator[str]:
        for i in range(n):
            yield f"{self.name}-{i}"

    @ketch.exit()
    def close(self) -> None:
        if self.outdir:
            exited = Path(self.outdir, f"exit-{ident.file_name(ident.me())}")
            exited.write_text(f"{self.name}:{self.served}")
