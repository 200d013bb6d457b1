"""Functions whose containers fail to start or die mid-input."""

import os
import signal

import ketch
from supports import ident

app = ketch.App("crashy")


@app.function()
def die_once(marker: str, how: str) -> str:
    if not os.path.exists(marker):
        with open(marker, "w") as fh:
            fh.write(ident.me())  # which process died (a sandboxed pid is not unique)
        if how == "exit":
            os._exit(1)
        os.kill(os.getpid(), signal.SIGKILL)
    return f"survived in {ident.me()}"


@app.function()
def always_dies() -> None:
    os._exit(3)


@app.cls()
class BadEnter:
    @ketch.enter()
    def load(self) -> None:
        raise RuntimeError("enter hook exploded")

    @ketch.method()
    def f(self) -> int:
        return 1
