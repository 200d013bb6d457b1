"""A Modal app for tests/integration/test_modal_wire.py, run by the official `modal` CLI
(copied into the test's own directory first: it is not part of the `supports` package)."""

import modal

app = modal.App("wire-basic")


@app.function()
def square(x: int) -> int:
    print(f"squaring {x}")
    return x * x


@app.function()
def fail(message: str) -> None:
    raise ValueError(message)


@app.function()
def digest(data: bytes) -> tuple[int, str, bytes]:
    """Size and SHA-256 of a large argument, and a large result (its bytes reversed)."""
    import hashlib

    return len(data), hashlib.sha256(data).hexdigest(), data[::-1]


@app.function(timeout=2)
def hang() -> None:
    import time

    while True:  # never returns: ketch's timeout= must end it
        time.sleep(1)


@app.function(retries=modal.Retries(max_retries=2, backoff_coefficient=1.0, initial_delay=0.0))
def flaky(counter: str) -> int:
    """Fails its first two attempts (counted in a file of a directory shared with it)."""
    import os

    attempt = len(os.listdir(counter)) + 1
    open(os.path.join(counter, str(attempt)), "w").close()
    if attempt < 3:
        raise RuntimeError(f"attempt {attempt} fails")
    return attempt


@app.function()
def peek(path: str) -> bool:
    import os

    return os.path.exists(path)


@app.local_entrypoint()
def main(probe: str = "", counter: str = "") -> None:
    print("remote:", square.remote(7))
    if counter:
        print("retried until attempt", flaky.remote(counter))
    if probe:
        # The ketch server's own token file: a sandboxed container must not see it.
        print("container sees the server token:", peek.remote(probe))
    print("map:", sum(square.map(range(100))))
    import hashlib
    import os

    big = os.urandom(5 * 1024 * 1024)  # over the client's 2 MiB limit: through blobs
    size, sha, back = digest.remote(big)
    same = sha == hashlib.sha256(big).hexdigest() and back == big[::-1]
    print("blob:", size, "intact" if same else "CORRUPTED")
    try:
        fail.remote("boom from the container")
    except ValueError as exc:
        print("caught:", type(exc).__name__, exc)
    try:
        hang.remote()
    except modal.exception.FunctionTimeoutError as exc:
        print("timed out:", type(exc).__name__)
    print("after the timeout:", square.remote(3))
