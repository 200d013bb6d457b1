"""`ketch.forward(port)`: from inside a container, a URL through the server for a port that
code in this container listens on (Modal's `modal.forward`), for as long as the block lasts.

    with ketch.forward(8000) as tunnel:
        print(tunnel.url)     # reachable from outside the container
        serve_forever(8000)
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

from ketch._client import volume_api as api
from ketch._sandbox_io import Tunnel
from ketch._utils.aio import run_sync
from ketch.exception import InvalidError

__all__ = ["forward"]


@contextlib.contextmanager
def forward(port: int, *, unencrypted: bool = False, h2_enabled: bool = False) -> Iterator[Tunnel]:
    """A tunnel to `port` of this container: its `url` (https when the server's gateway has
    a TLS certificate and `unencrypted` is False) and `tcp_socket`."""
    if not os.environ.get("KETCH_CONTAINER_ID"):
        raise InvalidError("ketch.forward() works inside a ketch container (a function's code)")
    if not isinstance(port, int) or not 1 <= port <= 65535:
        raise InvalidError(f"forward(port): a port number 1-65535, not {port!r}")
    reply = run_sync(
        api.call("POST", "/v1/sandboxes/forward", json={"port": port, "unencrypted": unencrypted})
    )
    tunnel = Tunnel(reply["host"], int(reply["port"]), bool(reply["encrypted"]))
    try:
        yield tunnel
    finally:
        with contextlib.suppress(Exception):
            path = f"/v1/sandboxes/forward/{reply['owner']}/{tunnel.port}"
            run_sync(api.call("DELETE", path))
