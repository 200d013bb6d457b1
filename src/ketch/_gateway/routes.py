"""The route table: host, custom domain or per-endpoint port -> endpoint.

It is rebuilt and swapped whole whenever apps change, so a lookup is a dict access and a
request never sees a half-updated table.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ketch.exception import AlreadyExistsError


@dataclass(frozen=True)
class Endpoint:
    function_id: str
    app_id: str
    app_name: str
    tag: str
    host: str  # the host label, e.g. "local--hello-square"
    port: int  # the endpoint's own port on the gateway host
    web: dict[str, object] = field(hash=False, compare=False, default_factory=dict)

    @property
    def requires_proxy_auth(self) -> bool:
        return bool(self.web.get("requires_proxy_auth"))


@dataclass(frozen=True)
class RouteTable:
    by_host: dict[str, Endpoint] = field(default_factory=dict)
    by_port: dict[int, Endpoint] = field(default_factory=dict)
    by_domain: dict[str, Endpoint] = field(default_factory=dict)
    # "example.com" for "*.example.com"
    by_wildcard: dict[str, Endpoint] = field(default_factory=dict)

    def lookup(self, host: str | None, port: int, domain: str) -> Endpoint | None:
        ep = self.by_port.get(port)
        if ep is not None:
            return ep
        if not host:
            return None
        suffix = "." + domain
        if host.endswith(suffix):
            ep = self.by_host.get(host[: -len(suffix)])
            if ep is not None:
                return ep
        ep = self.by_domain.get(host)
        if ep is not None:
            return ep
        _, _, parent = host.partition(".")
        while parent:
            ep = self.by_wildcard.get(parent)
            if ep is not None:
                return ep
            _, _, parent = parent.partition(".")
        return None


def build_table(endpoints: list[Endpoint]) -> RouteTable:
    """A consistent table, or AlreadyExistsError naming the clash."""
    table = RouteTable()
    for ep in endpoints:
        if ep.host in table.by_host:
            other = table.by_host[ep.host]
            raise AlreadyExistsError(
                f"web label {ep.host!r} of {ep.app_name}.{ep.tag} is already used by "
                f"{other.app_name}.{other.tag}"
            )
        table.by_host[ep.host] = ep
        table.by_port[ep.port] = ep
        for domain in ep.web.get("custom_domains", []) or []:  # type: ignore[attr-defined]
            d = str(domain)
            target = table.by_wildcard if d.startswith("*.") else table.by_domain
            key = d[2:] if d.startswith("*.") else d
            if key in target:
                other = target[key]
                raise AlreadyExistsError(
                    f"custom domain {d!r} is already used by {other.app_name}.{other.tag}"
                )
            target[key] = ep
    return table
