"""Secrets: environment variables for containers, from a dict, a name, a .env file or os.environ."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ketch._utils.env_values import check_key, check_values, read_dotenv
from ketch._utils.labels import validate_name
from ketch.exception import InvalidError

__all__ = ["Secret"]


class Secret:
    """A set of environment variables for a function's containers.

    Values are never shown by ``repr``/``str``. Secrets read from a ``.env`` file or from the
    local environment are read when the app is deployed, not when the object is created, so
    that the same module can be imported inside a container where neither exists.
    """

    _kind: str
    _values: dict[str, str] | None
    _name: str | None
    _environment: str | None
    _required_keys: tuple[str, ...]
    _dotenv_start: Path | None
    _dotenv_filename: str
    _env_keys: tuple[str, ...]

    def __init__(self) -> None:
        raise InvalidError(
            "create a Secret with Secret.from_dict, Secret.from_name, Secret.from_dotenv "
            "or Secret.from_local_environ"
        )

    @classmethod
    def _new(cls, kind: str) -> Secret:
        obj = object.__new__(cls)
        obj._kind = kind
        obj._values = None
        obj._name = None
        obj._environment = None
        obj._required_keys = ()
        obj._dotenv_start = None
        obj._dotenv_filename = ".env"
        obj._env_keys = ()
        return obj

    @classmethod
    def from_dict(cls, env_dict: Mapping[str, str | None] | None = None) -> Secret:
        """A secret holding ``env_dict``; keys whose value is ``None`` are left out."""
        obj = cls._new("dict")
        obj._values = check_values(env_dict if env_dict is not None else {}, "Secret.from_dict")
        return obj

    @classmethod
    def from_name(
        cls,
        name: str,
        *,
        environment_name: str | None = None,
        required_keys: Sequence[str] = (),
    ) -> Secret:
        """A reference to a secret stored on the server (``ketch secret create``).

        The server resolves it at deploy time; a missing secret, or one that lacks any of
        ``required_keys``, fails the deploy.
        """
        validate_name("secret", name)
        if environment_name is not None and not isinstance(environment_name, str):
            raise InvalidError(
                f"Secret.from_name: environment_name must be a string, got {environment_name!r}"
            )
        if isinstance(required_keys, str) or not isinstance(required_keys, Sequence):
            raise InvalidError(
                f"Secret.from_name: required_keys must be a list of names, got {required_keys!r}"
            )
        obj = cls._new("named")
        obj._name = name
        obj._environment = environment_name
        obj._required_keys = tuple(check_key(k, "Secret.from_name") for k in required_keys)
        return obj

    @classmethod
    def from_dotenv(
        cls, path: str | os.PathLike[str] | None = None, *, filename: str = ".env"
    ) -> Secret:
        """A secret read from a ``.env`` file when the app is deployed.

        The file named ``filename`` is looked up from a starting directory towards the root:
        the current directory when ``path`` is None, ``path`` itself when it is a directory,
        otherwise the directory that contains ``path`` (so ``Secret.from_dotenv(__file__)``
        looks beside the calling module).
        """
        if not isinstance(filename, str) or not filename or "/" in filename:
            raise InvalidError(
                f"Secret.from_dotenv: filename must be a plain file name, got {filename!r}"
            )
        start = Path.cwd() if path is None else Path(path).expanduser().absolute()
        if path is not None and not start.is_dir():
            start = start.parent
        obj = cls._new("dotenv")
        obj._dotenv_start = start
        obj._dotenv_filename = filename
        return obj

    @classmethod
    def from_local_environ(cls, env_keys: Sequence[str]) -> Secret:
        """A secret copying ``env_keys`` from this process's environment at deploy time."""
        if isinstance(env_keys, str) or not isinstance(env_keys, Sequence):
            raise InvalidError(
                f"Secret.from_local_environ: env_keys must be a list of names, got {env_keys!r}"
            )
        obj = cls._new("local_environ")
        obj._env_keys = tuple(check_key(k, "Secret.from_local_environ") for k in env_keys)
        return obj

    def _dotenv_path(self) -> Path:
        assert self._dotenv_start is not None
        for directory in (self._dotenv_start, *self._dotenv_start.parents):
            candidate = directory / self._dotenv_filename
            if candidate.is_file():
                return candidate
        raise InvalidError(
            f"Secret.from_dotenv: no {self._dotenv_filename} file in {self._dotenv_start} "
            "or any directory above it; create one or pass its location as path="
        )

    def _resolve(self) -> dict[str, str]:
        if self._values is not None:
            return self._values
        if self._kind == "dotenv":
            path = self._dotenv_path()
            values = check_values(read_dotenv(path), f"Secret.from_dotenv({str(path)!r})")
        elif self._kind == "local_environ":
            missing = [k for k in self._env_keys if k not in os.environ]
            if missing:
                raise InvalidError(
                    "Secret.from_local_environ: not set in the local environment: "
                    + ", ".join(missing)
                    + "; export them before deploying"
                )
            values = {k: os.environ[k] for k in self._env_keys}
        else:
            raise AssertionError(f"unexpected secret kind {self._kind!r}")
        self._values = values
        return values

    def spec(self) -> dict[str, Any]:
        """The JSON form sent to the server.

        ``{"kind": "inline", "values": {...}}`` or
        ``{"kind": "named", "name": ..., "environment": ..., "required_keys": [...]}``.
        Reading a ``.env`` file or the local environment happens here, on first use.
        """
        if self._kind == "named":
            return {
                "kind": "named",
                "name": self._name,
                "environment": self._environment,
                "required_keys": list(self._required_keys),
            }
        return {"kind": "inline", "values": dict(self._resolve())}

    def __repr__(self) -> str:
        if self._kind == "named":
            env = f", environment_name={self._environment!r}" if self._environment else ""
            return f"Secret.from_name({self._name!r}{env})"
        if self._kind == "dotenv":
            start, filename = str(self._dotenv_start), self._dotenv_filename
            return f"Secret.from_dotenv({start!r}, filename={filename!r})"
        if self._kind == "local_environ":
            return f"Secret.from_local_environ({list(self._env_keys)!r})"
        # Key names are not secret; only values are kept out of sight.
        return f"Secret.from_dict(keys={sorted(self._values or {})!r})"

    __str__ = __repr__
