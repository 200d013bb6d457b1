"""Which web endpoints an app version has: labels, hosts, ports, URLs."""

from __future__ import annotations

from typing import Any

from ketch._gateway.routes import Endpoint
from ketch._server.web_service import WebService
from ketch._utils.ids import stable_id
from ketch._utils.labels import default_label, host_label


def app_endpoints(
    web: WebService,
    app_id: str,
    stored: dict[str, Any],
    *,
    ephemeral: bool,
    workspace: str,
    reserve: bool = True,
) -> list[Endpoint]:
    """The endpoints of one app version; with `reserve`, new ones get a port recorded."""
    out = []
    for tag, fspec in stored["functions"].items():
        spec = fspec.get("web")
        if not spec:
            continue
        label = spec.get("label") or default_label(stored["name"], tag)
        host = host_label(workspace, stored["environment"], label, ephemeral=ephemeral)
        out.append(
            Endpoint(
                function_id=stable_id("fu", app_id, tag),
                app_id=app_id,
                app_name=stored["name"],
                tag=tag,
                host=host,
                port=web.port_for(host, reserve=reserve),
                # A class's web method takes the class parameters from the query string.
                web={**spec, "cls_params": fspec.get("param_types")}
                if fspec.get("web_method")
                else spec,
            )
        )
    return out
