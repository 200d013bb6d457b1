"""The management API's typed contracts: what a deploy, a secret or a volume request may hold.

Every body is checked against these models before anything is read from it or written
(issue 11): a wrong type, a value out of range or an unknown key is a 422 that names the
field. A function's spec is its own contract (`ketch._utils.protocol.spec`); here are the
bodies built from it: a deploy as `ketch._app_spec.app_spec` sends it, and an app
version as the server writes it (checked again when a version is read back on start).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Literal

from fastapi import Path, Query
from pydantic import (
    AfterValidator,
    Field,
    StringConstraints,
    ValidationError,
    WithJsonSchema,
    model_validator,
)

# The function spec's models live with the other typed contracts; the API's bodies are
# built from them, so /openapi.json documents a deploy in full.
from ketch._utils.labels import NAME_PATTERN
from ketch._utils.protocol.spec import (
    ID_PATTERN,
    SHA256_PATTERN,
    TAG_PATTERN,
    TEXT_PATTERN,
    Contract,
    FunctionBase,
    FunctionSpec,
    Int,
    Name,
    Sha256,
    StoredFunction,
    Tag,
    Text,
)

_ENV_KEY = r"^[A-Za-z_][A-Za-z0-9_]*$"


def _env_key(value: str) -> str:
    if not re.match(_ENV_KEY, value) or len(value) > 256:
        raise ValueError(f"{value!r} is not a valid environment variable name")
    return value


EnvKey = Annotated[
    str,
    AfterValidator(_env_key),
    WithJsonSchema({"type": "string", "pattern": _ENV_KEY, "maxLength": 256}),
]


class SourceRef(Contract):
    blob: Sha256


def _tags_match(functions: Mapping[str, FunctionBase]) -> None:
    for key, fn in functions.items():
        if fn.tag != key:
            raise ValueError(f"functions[{key!r}].tag is {fn.tag!r}; it must be {key!r}")


class DeployIn(Contract):
    """A deploy: the app's name and environment, its functions, and its shipped source."""

    name: Name
    environment: Name = "main"
    ephemeral: bool = False
    # `--force-build`: build every image (and root-filesystem layer) again, cached or not.
    force_build: bool = False
    # A new version of a running ephemeral app (`ketch serve` reloading).
    app_id: Annotated[str, StringConstraints(pattern=ID_PATTERN)] | None = None
    source: SourceRef | None = None
    functions: dict[Tag, FunctionSpec] = Field(
        max_length=1000, json_schema_extra={"minProperties": 1}
    )

    @model_validator(mode="after")
    def _check(self) -> DeployIn:
        if not self.functions:  # said in words: an app file that registers nothing
            raise ValueError(f"app {self.name!r} has no functions to deploy")
        _tags_match(self.functions)
        return self


class StoredApp(Contract):
    """An app version as the store holds it."""

    name: Name
    environment: Name
    source: SourceRef | None = None
    # None at all for an app `App.lookup(create_if_missing=True)` made.
    functions: dict[Tag, StoredFunction]
    rollback_of: Annotated[Int, Field(ge=1)] | None = None

    @model_validator(mode="after")
    def _check(self) -> StoredApp:
        _tags_match(self.functions)
        return self


# -- secrets, volumes and other small bodies -------------------------------------------
class SecretIn(Contract):
    name: Name
    values: dict[EnvKey, Text] = Field(min_length=1, max_length=1000)
    environment: Name = "main"
    force: bool = False


VolumePath = Annotated[str, StringConstraints(pattern=TEXT_PATTERN, max_length=4096)]


class VolumeNameIn(Contract):
    name: Name
    environment: Name = "main"
    create_if_missing: bool = False


class EnvironmentIn(Contract):
    environment: Name = "main"


class PathsIn(Contract):
    paths: list[VolumePath] = Field(max_length=10_000)


class CopyIn(Contract):
    sources: list[VolumePath] = Field(min_length=1, max_length=10_000)
    dest: VolumePath
    recursive: bool = False


# -- path and query parameters ---------------------------------------------------------
# Checked like bodies: a name, an id or a number out of range is a 422, not a lookup.
AppRef = Annotated[str, Path(pattern=NAME_PATTERN, description="an app's name or id")]
NameParam = Annotated[str, Path(pattern=NAME_PATTERN)]
IdParam = Annotated[str, Path(pattern=ID_PATTERN)]
ShaParam = Annotated[str, Path(pattern=SHA256_PATTERN)]
EnvQuery = Annotated[str, Query(pattern=NAME_PATTERN)]
VersionQuery = Annotated[int | None, Query(ge=1, le=2**62)]
TailQuery = Annotated[int | None, Query(ge=0, le=10_000_000)]
LimitQuery = Annotated[int, Query(ge=1, le=10_000)]
PathQuery = Annotated[str, Query(pattern=TEXT_PATTERN, max_length=4096)]
ModeQuery = Annotated[int | None, Query(ge=0, le=0o7777)]
FunctionQuery = Annotated[str | None, Query(pattern=TAG_PATTERN)]
ContainerQuery = Annotated[str | None, Query(pattern=ID_PATTERN)]
AppQuery = Annotated[str | None, Query(pattern=NAME_PATTERN)]
SourceQuery = Annotated[list[Literal["stdout", "stderr", "system"]], Query()]


# -- error text ------------------------------------------------------------------------
def _printable(part: object) -> str:
    # A key of the body may be any text, lone surrogates included: escaped, and cut short.
    text = str(part).encode("utf-8", "backslashreplace").decode("utf-8")
    return text if len(text) <= 80 else text[:77] + "..."


def describe_errors(errors: Sequence[Mapping[str, Any]], limit: int = 5) -> list[dict[str, Any]]:
    """Errors as `{"loc": [...], "msg", "type"}`: where and what, never the value given
    (it may be a secret)."""
    return [
        {
            "loc": [p if isinstance(p, int) else _printable(p) for p in err.get("loc", ())],
            "msg": _printable(err.get("msg", "")),
            "type": str(err.get("type", "")),
        }
        for err in list(errors)[:limit]
    ]


def errors_text(errors: Sequence[Mapping[str, Any]], limit: int = 5) -> str:
    """One line naming each wrong field: `functions.f.options.max_inputs: Input should...`."""
    parts = []
    for err in describe_errors(errors, limit):
        where = ".".join(str(p) for p in err["loc"])
        parts.append(f"{where}: {err['msg']}" if where else err["msg"])
    if len(errors) > limit:
        parts.append(f"and {len(errors) - limit} more")
    return "; ".join(parts)


def validation_message(exc: ValidationError) -> str:
    return errors_text(exc.errors(include_url=False, include_input=False, include_context=False))
