"""What a container is told of its function: the part of the spec the runtime reads.

The server decodes and checks a deploy with pydantic (`spec.StoredFunction`); a container
must start without importing pydantic (it would add to every cold start), so the server
sends it this smaller record with every field filled in, and the runtime decodes it once,
into these frozen dataclasses, when its first frame arrives. No defaults are repeated here:
the server fills each field from the typed spec, where the defaults live. Server and
containers of one version are all that must agree on the shape.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

WebKind = Literal["fastapi", "asgi", "wsgi", "web_server"]


@dataclass(frozen=True, slots=True)
class ContainerWeb:
    """A web function's serving settings (a `web_server`'s port and start-up wait)."""

    type: WebKind
    method: str  # the route's HTTP method (fastapi_endpoint)
    docs: bool  # serve FastAPI's /docs (fastapi_endpoint)
    port: int  # the port a web_server listens on (0 for other kinds)
    startup_timeout: float  # how long a web_server may take to open its port


@dataclass(frozen=True, slots=True)
class ContainerFunction:
    tag: str
    kind: Literal["function", "cls"]
    module: str | None  # imported to find the function, unless it is serialized
    serialized: str | None  # base64 of the cloudpickled function or class
    max_inputs: int  # inputs at once (@concurrent)
    batched: bool  # @batched: inputs arrive in BATCH frames
    web: ContainerWeb | None

    def to_wire(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_wire(cls, data: dict[str, Any]) -> ContainerFunction:
        web = data["web"]
        return cls(**{**data, "web": ContainerWeb(**web) if web is not None else None})

    def same_code(self, other: ContainerFunction) -> bool:
        """Whether `other` loads the very same function or class (a fork-server template
        that loaded this one can serve it)."""
        return (self.module, self.tag, self.kind, self.serialized) == (
            other.module,
            other.tag,
            other.kind,
            other.serialized,
        )
