"""Environment variables as secrets and containers take them: the checks on names and
values, and .env files. Shared by the SDK, the CLI and the server, which check the same."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ketch.exception import InvalidError


def check_key(key: object, where: str) -> str:
    if not isinstance(key, str):
        raise InvalidError(f"{where}: keys must be strings, got {key!r} ({type(key).__name__})")
    # The container receives these as environment variables, which cannot hold these.
    if not key or "=" in key or "\0" in key:
        raise InvalidError(
            f"{where}: {key!r} cannot be an environment variable name "
            "(it must be non-empty and contain no '=' or NUL)"
        )
    return key


def check_values(env: Mapping[Any, Any], where: str) -> dict[str, str]:
    """`env` as environment variables (None values dropped), or InvalidError saying why not
    (never echoing a value: it may be the secret itself)."""
    if not isinstance(env, Mapping):
        raise InvalidError(f"{where}: expected a dict of str to str, got {type(env).__name__}")
    out: dict[str, str] = {}
    for key, value in env.items():
        name = check_key(key, where)
        if value is None:
            continue
        if not isinstance(value, str):
            # The value is not echoed: it may be the secret itself.
            raise InvalidError(
                f"{where}: the value of {name!r} must be a string or None, "
                f"got a {type(value).__name__}"
            )
        if "\0" in value:
            raise InvalidError(f"{where}: the value of {name!r} contains a NUL character")
        out[name] = value
    return out


def _parse_dotenv_fallback(text: str) -> dict[str, str | None]:
    """Parse ``KEY=VALUE`` lines; used only when python-dotenv is not installed."""
    out: dict[str, str | None] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("export "):
            line = line[len("export ") :].lstrip()
        if "=" not in line:
            out[line] = None
            continue
        key, _, rest = line.partition("=")
        key, rest = key.strip(), rest.strip()
        if rest[:1] in ("'", '"'):
            quote = rest[0]
            end = rest.find(quote, 1)
            while quote == '"' and end > 0 and rest[end - 1] == "\\":
                end = rest.find(quote, end + 1)
            value = rest[1:end] if end > 0 else rest[1:]
            if quote == '"':
                value = (
                    value.replace("\\n", "\n")
                    .replace("\\t", "\t")
                    .replace('\\"', '"')
                    .replace("\\\\", "\\")
                )
        else:
            value = rest.split(" #", 1)[0].rstrip()
        out[key] = value
    return out


def read_dotenv(path: Path) -> dict[str, str | None]:
    """A .env file's variables (None for a bare `KEY` line), with python-dotenv if present."""
    try:
        from dotenv import dotenv_values
    except ImportError:
        return _parse_dotenv_fallback(path.read_text(encoding="utf-8"))
    return dict(dotenv_values(path))
