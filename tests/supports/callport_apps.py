"""An app for the call port's trust tests: big results, echo, and a secret read back."""

import hashlib
import os
import time
from typing import Any

import ketch

app = ketch.App("callport")


@app.function(max_containers=1)
def echo(value: Any) -> Any:
    return value


@app.function(max_containers=1)
def zeros(n: int) -> bytes:
    return bytes(n)


@app.cls(max_containers=1)
class Env:
    @ketch.method()
    def digest_when(self, name: str, gate: str) -> str | None:
        """The SHA-256 of an environment variable (never its value, which would be stored
        as the result), once `gate` exists."""
        while not os.path.exists(gate):
            time.sleep(0.05)
        value = os.environ.get(name)
        return None if value is None else hashlib.sha256(value.encode()).hexdigest()
