"""RPCs that create an app's objects: mounts (the user's files), images, functions."""

from __future__ import annotations

import hashlib
import re
from typing import TYPE_CHECKING, Any

from grpclib.const import Status
from grpclib.exceptions import GRPCError

from ketch._modal_wire.apps import IMAGE_BUILDER_VERSION, missing
from ketch._modal_wire.servicer import Ctx, Handlers
from ketch._modal_wire.state import WireFunction, WireImage, new_id

if TYPE_CHECKING:
    from ketch._modal_wire.core import Wire

# The first layer of Modal's own Python images (Image.debian_slim and the default image):
# `FROM python:<version>-slim-<debian>`. Its RUN lines only install Modal's base tooling
# and requirements, which the ketch environment gets by installing `modal` itself.
_PYTHON_BASE = re.compile(r"^FROM python:(\d+\.\d+)(?:\.\d+)?-slim(?:-\w+)?$")
# A later layer's pip step, as Image.pip_install writes it.
_PIP_STEP = re.compile(r"^RUN python -m pip install (.+)$")


def register(wire: Wire, handlers: Handlers) -> None:
    pb2 = wire.pb2

    async def mount_get_or_create(req: Any, ctx: Ctx) -> Any:
        files = [(f.filename, f.sha256_hex, f.mode) for f in req.files]
        absent = [name for name, sha, _ in files if not wire.blobs.has(sha)]
        if absent:
            raise GRPCError(Status.NOT_FOUND, f"mount files not uploaded: {', '.join(absent[:5])}")
        digest = hashlib.sha256(repr(sorted(files)).encode()).hexdigest()
        mount_id = wire.mount_by_digest.get(digest)
        if mount_id is None:
            mount_id = new_id("mo")
            wire.mounts[mount_id] = files
            wire.mount_by_digest[digest] = mount_id
        metadata = pb2.MountHandleMetadata(content_checksum_sha256_hex=digest)
        return pb2.MountGetOrCreateResponse(mount_id=mount_id, handle_metadata=metadata)

    async def mount_check(req: Any, ctx: Ctx) -> Any:
        missing_hashes = [h for h in req.sha256_hex_hashes if not wire.blobs.has(h)]
        return pb2.MountBatchedCheckExistenceResponse(missing_sha256_hex_hashes=missing_hashes)

    async def mount_put_file(req: Any, ctx: Ctx) -> Any:
        data = req.data
        if req.data_blob_id:
            # Files over 4 MiB come through a blob upload first.
            path = wire.large_blobs.path(req.data_blob_id)
            if req.data_blob_id not in wire.large_blobs.tokens or not path.is_file():
                raise GRPCError(Status.NOT_FOUND, f"blob {req.data_blob_id!r} not found")
            data = path.read_bytes()
        if data or req.data_blob_id or req.HasField("data"):
            if hashlib.sha256(data).hexdigest() != req.sha256_hex:
                raise GRPCError(
                    Status.INVALID_ARGUMENT, "mount file content does not match its hash"
                )
            wire.blobs.put(req.sha256_hex, data)
            return pb2.MountPutFileResponse(exists=True)
        return pb2.MountPutFileResponse(exists=wire.blobs.has(req.sha256_hex))

    async def image_get_or_create(req: Any, ctx: Ctx) -> Any:
        image = req.image
        try:
            python_version, packages = _plan_image(wire, image)
        except ValueError as exc:
            result = pb2.GenericResult(
                status=pb2.GenericResult.GENERIC_STATUS_FAILURE, exception=str(exc)
            )
            return pb2.ImageGetOrCreateResponse(image_id="", result=result)
        version = ctx.client_version
        key = (python_version, tuple(packages), version)
        image_id = wire.image_by_key.get(key)
        if image_id is None:
            image_id = new_id("im")
            wire.images[image_id] = WireImage(image_id, python_version, packages, version)
            wire.image_by_key[key] = image_id
        built = wire.images[image_id]
        try:
            await wire.build_image(built)
        except Exception as exc:
            result = pb2.GenericResult(
                status=pb2.GenericResult.GENERIC_STATUS_FAILURE, exception=str(exc)
            )
            return pb2.ImageGetOrCreateResponse(image_id=image_id, result=result)
        metadata = pb2.ImageMetadata(
            python_version_info=python_version,
            image_builder_version=req.builder_version or IMAGE_BUILDER_VERSION,
        )
        result = pb2.GenericResult(status=pb2.GenericResult.GENERIC_STATUS_SUCCESS)
        return pb2.ImageGetOrCreateResponse(image_id=image_id, result=result, metadata=metadata)

    async def function_precreate(req: Any, ctx: Ctx) -> Any:
        app = wire.app(req.app_id)
        function_id = req.existing_function_id or app.function_ids.get(req.function_name)
        if not function_id or function_id not in wire.functions:
            function_id = new_id("fu")
        fn = wire.functions.get(function_id) or WireFunction(
            function_id, app.app_id, req.function_name
        )
        fn.handle_metadata = _handle_metadata(pb2, req.function_name, req.function_type, app.app_id)
        wire.functions[function_id] = fn
        app.function_ids[req.function_name] = function_id
        return pb2.FunctionPrecreateResponse(
            function_id=function_id, handle_metadata=fn.handle_metadata
        )

    async def function_create(req: Any, ctx: Ctx) -> Any:
        app = wire.app(req.app_id)
        if req.HasField("function_data"):
            if not req.function_data.ranked_functions:
                raise GRPCError(Status.INVALID_ARGUMENT, "function_data has no ranked_functions")
            definition = req.function_data.ranked_functions[0].function
        else:
            definition = req.function
        name = definition.function_name
        function_id = req.existing_function_id or new_id("fu")
        fn = wire.functions.get(function_id) or WireFunction(function_id, app.app_id, name)
        if fn.definition is not None and fn.definition != definition:
            wire.retire_containers(fn)
        fn.definition = definition
        fn.function_data = req.function_data if req.HasField("function_data") else None
        fn.client_version = ctx.client_version
        fn.handle_metadata = _handle_metadata(pb2, name, definition.function_type, app.app_id)
        if definition.image_id not in wire.images:
            raise missing("image", definition.image_id)
        for mount_id in definition.mount_ids:
            if mount_id not in wire.mounts:
                raise missing("mount", mount_id)
        wire.functions[function_id] = fn
        app.function_ids[name] = function_id
        response = pb2.FunctionCreateResponse(
            function_id=function_id, handle_metadata=fn.handle_metadata
        )
        # 1.6.x reads the function's description back from function_data, whichever
        # form the request used.
        if fn.function_data is None:
            data = pb2.FunctionData(
                module_name=definition.module_name,
                function_name=name,
                function_type=definition.function_type,
            )
            data.ranked_functions.append(
                pb2.FunctionData.RankedFunction(rank=0, function=definition)
            )
            fn.function_data = data
        response.function_data.CopyFrom(fn.function_data)
        response.function.CopyFrom(definition)
        return response

    handlers.unary.update(
        MountGetOrCreate=mount_get_or_create,
        MountBatchedCheckExistence=mount_check,
        MountPutFile=mount_put_file,
        ImageGetOrCreate=image_get_or_create,
        FunctionPrecreate=function_precreate,
        FunctionCreate=function_create,
    )


def _handle_metadata(pb2: Any, name: str, function_type: int, app_id: str) -> Any:
    # input_plane_url stays empty: the client then uses this control-plane path.
    return pb2.FunctionHandleMetadata(
        function_name=name,
        function_type=function_type,
        app_id=app_id,
        max_object_size_bytes=4 * 1024 * 1024,
    )


def _plan_image(wire: Wire, image: Any) -> tuple[str, list[str]]:
    """(python version, pip requirements) of an image chain this front end can build as a
    plain-Python ketch environment; ValueError naming the first step it cannot."""
    commands = list(image.dockerfile_commands)
    if not image.base_images:
        head = commands[0].strip() if commands else ""
        match = _PYTHON_BASE.match(head)
        if match is None:
            raise ValueError(
                f"ketch's Modal front end builds Modal's Python base images only; "
                f"unsupported base {head!r}"
            )
        return match.group(1), []
    if len(image.base_images) != 1:
        raise ValueError("images with several bases are not supported by ketch's Modal front end")
    parent = wire.images.get(image.base_images[0].image_id)
    if parent is None:
        raise ValueError(f"base image {image.base_images[0].image_id!r} is not known")
    packages = list(parent.packages)
    for line in commands[1:]:
        match = _PIP_STEP.match(line.strip())
        if match is None:
            raise ValueError(
                f"ketch's Modal front end does not build the image step {line.strip()!r} yet"
            )
        packages += [p.strip("'\"") for p in match.group(1).split() if not p.startswith("-")]
    return parent.python_version, packages
