"""The servicer class: Modal's generated base with every RPC filled in.

Each handled RPC is a plain coroutine `(request, ctx) -> response` in a handler module,
registered by name; every other RPC of the service answers UNIMPLEMENTED naming itself,
so the client raises a clear error instead of waiting. Auth and the client-version check
run before any handler (a grpclib RecvRequest listener), except on a container's own
socket, whose identity is the socket."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from grpclib.const import Status
from grpclib.events import RecvRequest, listen
from grpclib.exceptions import GRPCError
from grpclib.server import Server

from ketch._modal_wire import proto
from ketch._utils import modal_tokens as auth

log = logging.getLogger("ketch.modal_wire")

_SERVICE = "/modal.client.ModalClient/"


@dataclass(frozen=True)
class Ctx:
    """Who sent a request: a client (with its version) or one container (its task id)."""

    client_version: str
    task_id: str | None
    metadata: dict[str, str]


Unary = Callable[[Any, Ctx], Awaitable[Any]]
Streaming = Callable[[Any, Ctx], AsyncIterator[Any]]


class Handlers:
    """The RPCs this front end serves: name -> coroutine (or async generator for streams)."""

    def __init__(self) -> None:
        self.unary: dict[str, Unary] = {}
        self.streaming: dict[str, Streaming] = {}

    def names(self) -> set[str]:
        return set(self.unary) | set(self.streaming)


# RPC name prefix -> the feature a user knows it by (longest prefix first).
_FEATURES = (
    ("SharedVolume", "network file systems"),
    ("FunctionCall", "function calls (spawn, FunctionCall.from_id)"),
    ("Function", "functions"),
    ("Sandbox", "sandboxes"),
    ("Volume", "volumes"),
    ("Secret", "secrets"),
    ("Dict", "modal.Dict"),
    ("Queue", "modal.Queue"),
    ("Blob", "large arguments and results (blobs)"),
    ("Image", "images"),
    ("Class", "classes (@app.cls)"),
    ("Proxy", "proxies"),
    ("Tunnel", "tunnels"),
    ("Token", "token management"),
    ("Workspace", "workspaces"),
    ("Environment", "environments"),
    ("Container", "containers"),
    ("Task", "containers"),
    ("App", "apps"),
    ("Mount", "mounts"),
)


def feature_of(name: str) -> str:
    for prefix, feature in _FEATURES:
        if name.startswith(prefix):
            return feature
    return "this feature"


def unimplemented_message(name: str) -> str:
    return (
        f"{name} is not implemented by ketch's Modal front end ({feature_of(name)}: not "
        "supported yet; docs/modal-wire.md lists what is)"
    )


def build_servicer(grpc: Any, handlers: Handlers, task_id: str | None) -> Any:
    """An instance of a subclass of `api_grpc.ModalClientBase` for one socket."""
    namespace: dict[str, Any] = {}
    for name in proto.rpc_names(grpc):
        namespace[name] = _method(name, handlers, task_id)
    cls = type("KetchModalServicer", (grpc.ModalClientBase,), namespace)
    return cls()


def _ctx(stream: Any, task_id: str | None) -> Ctx:
    metadata = {k: v for k, v in (stream.metadata or {}).items() if isinstance(v, str)}
    return Ctx(metadata.get("x-modal-client-version", ""), task_id, metadata)


def _method(name: str, handlers: Handlers, task_id: str | None) -> Callable[..., Any]:
    unary = handlers.unary.get(name)
    streaming = handlers.streaming.get(name)

    async def serve_unary(self: Any, stream: Any) -> None:
        assert unary is not None
        request = await stream.recv_message()
        response = await unary(request, _ctx(stream, task_id))
        await stream.send_message(response)

    async def serve_stream(self: Any, stream: Any) -> None:
        assert streaming is not None
        request = await stream.recv_message()
        async for response in streaming(request, _ctx(stream, task_id)):
            await stream.send_message(response)

    async def refuse(self: Any, stream: Any) -> None:
        log.info("modal client called %s, which is not implemented", name)
        raise GRPCError(Status.UNIMPLEMENTED, unimplemented_message(name))

    if unary is not None:
        return serve_unary
    if streaming is not None:
        return serve_stream
    return refuse


def guard_clients(server: Server, server_token: str) -> None:
    """Refuse requests without a token pair of this server or from an unsupported client."""

    async def check(event: RecvRequest) -> None:
        metadata = event.metadata
        version = _first(metadata.get("x-modal-client-version"))
        refusal = proto.version_refusal(version)
        if refusal is not None:
            raise GRPCError(Status.FAILED_PRECONDITION, refusal)
        token_id = _first(metadata.get("x-modal-token-id"))
        token_secret = _first(metadata.get("x-modal-token-secret"))
        if not auth.check(server_token, token_id, token_secret):
            detail = "no token pair was sent" if not token_id else f"token id {token_id!r}"
            raise GRPCError(
                Status.UNAUTHENTICATED,
                f"ketch refused the Modal token pair ({detail}): create one with "
                "`ketch token create --modal` and set MODAL_TOKEN_ID / MODAL_TOKEN_SECRET",
            )

    listen(server, RecvRequest, check)


def _first(value: object) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, list | tuple) and value and isinstance(value[0], str):
        return value[0]
    return None
