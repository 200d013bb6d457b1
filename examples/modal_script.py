"""A script written for Modal runs unchanged on ketch: `import modal` resolves to ketch.

ketch run examples/modal_script.py
ketch deploy examples/modal_script.py
"""

import modal
from modal.functions import FunctionCall

app = modal.App("modal-script")


@app.function(timeout=60)
def cube(x: int) -> int:
    return x**3


@app.function()
def lookup_missing() -> str:
    try:
        modal.Function.from_name("no-such-app", "nothing").remote()
    except modal.exception.NotFoundError:
        return "NotFoundError, as on Modal"
    return "found?"


@app.local_entrypoint()
def main(x: int = 3) -> None:
    print("cube:", cube.remote(x))
    call = cube.spawn(x + 1)
    print("spawned cube:", FunctionCall.from_id(call.object_id).get())
    print("lookup:", lookup_missing.remote())
