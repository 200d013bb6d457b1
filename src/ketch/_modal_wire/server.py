"""Starts the Modal front end inside a running ketch server (`--modal-wire`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ketch._modal_wire.core import Wire

if TYPE_CHECKING:
    from ketch._server.main import Server


async def start(server: Server, address: str) -> tuple[Wire, str]:
    """The front end on `address` (port or unix:PATH), built on the server's parts; returns
    it and the URL clients set as MODAL_SERVER_URL."""

    async def build(spec: dict[str, Any], log: Any) -> Any:
        return await server.builder.build(spec, log)

    wire = Wire(
        state_dir=server.home / "modal-wire",
        sockets_dir=server.sockets_dir,
        server_token=server.token,
        build=build,
        backend=server.scheduler.backend,
        environment=server.config.environment,
    )
    url = await wire.listen(address, server.config.server_host)
    return wire, url
