"""Raw gRPC calls to ketch's Modal front end with Modal's own stubs, run with the official
client's interpreter: `python modal_wire_probe.py hello CLIENT_VERSION` sends ClientHello
with that x-modal-client-version (and the token pair from the environment);
`python modal_wire_probe.py volume` asks for a Volume through the SDK. Prints one JSON
line: the status and message the server answered."""

import asyncio
import json
import os
import sys
import urllib.parse


async def hello(version: str) -> dict[str, str]:
    from google.protobuf import empty_pb2
    from grpclib.client import Channel
    from grpclib.exceptions import GRPCError
    from modal_proto import api_grpc

    url = urllib.parse.urlparse(os.environ["MODAL_SERVER_URL"])
    channel = Channel(url.hostname, url.port)
    metadata = {
        "x-modal-client-version": version,
        "x-modal-token-id": os.environ["MODAL_TOKEN_ID"],
        "x-modal-token-secret": os.environ["MODAL_TOKEN_SECRET"],
    }
    try:
        await api_grpc.ModalClientStub(channel).ClientHello(empty_pb2.Empty(), metadata=metadata)
        return {"status": "OK", "message": ""}
    except GRPCError as exc:
        return {"status": exc.status.name, "message": exc.message or ""}
    finally:
        channel.close()


def volume() -> dict[str, str]:
    import modal

    try:
        modal.Volume.from_name("wire-volume", create_if_missing=True).hydrate()
        return {"status": "OK", "message": ""}
    except Exception as exc:
        return {"status": type(exc).__name__, "message": str(exc)}


if __name__ == "__main__":
    answer = asyncio.run(hello(sys.argv[2])) if sys.argv[1] == "hello" else volume()
    print(json.dumps(answer))
