"""The gateway test app running on a real server, as the smuggling and fuzz runs use it
(this is not an app): its endpoints' ports and Hosts, and a proxy-auth token for it."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from supports import gateway_guarded as g
from supports.web_helpers import endpoints_of, gateway_port


@dataclass
class Site:
    app_id: str
    ports: dict[str, int]  # function -> its own port
    hosts: dict[str, str]  # function -> its Host on the main port
    main_port: int
    creds: dict[str, str]

    def address(self, fn: str, route: str) -> tuple[int, str]:
        if route == "port":
            return self.ports[fn], f"127.0.0.1:{self.ports[fn]}"
        return self.main_port, self.hosts[fn]


@contextlib.contextmanager
def running_site(server: Any) -> Iterator[Site]:
    """`supports/gateway_guarded.py` running on `server` (a ServerHandle), with a token
    made for it; the token is revoked and the record removed afterwards."""
    token = json.loads(server.ketch("token", "create", "--json", check=True).stdout)
    try:
        with g.app.run(show_logs=False):
            app_id = g.app.app_id
            assert app_id is not None
            eps = endpoints_of(app_id)
            ports = {fn: int(ep["url"].rsplit(":", 1)[1]) for fn, ep in eps.items()}
            hosts = {fn: ep["host_url"].split("://", 1)[1] for fn, ep in eps.items()}
            creds = {"Ketch-Key": token["token_id"], "Ketch-Secret": token["secret"]}
            try:
                yield Site(app_id, ports, hosts, gateway_port(server.home), creds)
            finally:
                g.record_path(app_id).unlink(missing_ok=True)
    finally:
        server.ketch("token", "revoke", token["token_id"])
