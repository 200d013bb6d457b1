"""A class written with postponed annotations, whose parameter types are strings."""

from __future__ import annotations

import ketch

app = ketch.App("ketch-typed-models")


@app.cls()
class Tagged:
    label: str = ketch.parameter()
    count: int = ketch.parameter(default=0)

    @ketch.method()
    def show(self) -> str:
        return f"{self.label}:{self.count}"
