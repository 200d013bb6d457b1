"""What the sandbox routes accept (SPEC X1-X2), checked before anything starts."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, StringConstraints

from ketch._utils.protocol.spec import (
    ID_PATTERN,
    TAG_PATTERN,
    Contract,
    ImageSpec,
    MountPath,
    Name,
    SecretRef,
    Text,
    VolumeById,
    VolumeByName,
)

# A day, Modal's longest sandbox lifetime.
MAX_TIMEOUT = 24 * 3600
EnvKey = Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", max_length=256)]
Arg = Annotated[str, StringConstraints(pattern=r"^[^\x00]*$", max_length=128 * 1024)]
Port = Annotated[int, Field(ge=1, le=65535)]
TagKey = Annotated[str, StringConstraints(min_length=1, max_length=64)]
TagValue = Annotated[str, StringConstraints(max_length=256)]


class ProcessOptions(Contract):
    """What a process in a sandbox starts with (the sandbox's command, or an exec)."""

    args: Annotated[list[Arg], Field(max_length=4096)] = []
    workdir: MountPath | None = None
    env: dict[EnvKey, Text] = {}
    secrets: list[SecretRef] = []
    pty: bool = False


class SandboxCreate(ProcessOptions):
    app_id: Annotated[str, StringConstraints(pattern=ID_PATTERN)]
    name: Name | None = None
    tags: dict[TagKey, TagValue] = {}
    image: ImageSpec
    volumes: list[VolumeByName | VolumeById] = []
    timeout: Annotated[int, Field(ge=1, le=MAX_TIMEOUT)] = 300
    idle_timeout: Annotated[int, Field(ge=1, le=MAX_TIMEOUT)] | None = None
    cpu: Annotated[float, Field(gt=0, le=1024)] | None = None
    memory: Annotated[int, Field(ge=1, le=2**24)] | None = None
    gpu: Annotated[str, StringConstraints(max_length=64)] | None = None
    block_network: bool = False
    encrypted_ports: Annotated[list[Port], Field(max_length=64)] = []
    unencrypted_ports: Annotated[list[Port], Field(max_length=64)] = []
    force_build: bool = False


class Exec(ProcessOptions):
    args: Annotated[list[Arg], Field(min_length=1, max_length=4096)]
    timeout: Annotated[int, Field(ge=1, le=MAX_TIMEOUT)] | None = None
    stdout: bool = True
    stderr: bool = True


class FileOp(Contract):
    op: Literal["open", "ls", "mkdir", "rm", "stat"]
    path: MountPath
    mode: Annotated[str, StringConstraints(pattern=r"^[rwax]b?\+?b?$")] = "r"
    parents: bool = False
    recursive: bool = False


class Tags(Contract):
    tags: dict[TagKey, TagValue]


class AttachIn(Contract):
    container_id: Annotated[str, StringConstraints(pattern=ID_PATTERN)]


class ShellIn(Contract):
    app: Name
    function: Annotated[str, StringConstraints(pattern=TAG_PATTERN)]
    environment: Name = "main"
    timeout: Annotated[int, Field(ge=1, le=MAX_TIMEOUT)] = 3600


class ForwardIn(Contract):
    port: Port
    unencrypted: bool = False
