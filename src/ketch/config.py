"""Settings for one ketch process: defaults, then ~/.ketch.toml, then KETCH_* variables."""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from ketch.exception import InvalidError

# Name in the environment -> (field, type). The environment wins over the file.
_ENV: dict[str, tuple[str, type]] = {
    "KETCH_HOME": ("home", Path),
    "KETCH_SERVER_HOST": ("server_host", str),
    "KETCH_API_PORT": ("api_port", int),
    "KETCH_CALL_PORT": ("call_port", int),
    "KETCH_ENVIRONMENT": ("environment", str),
    "KETCH_WORKSPACE": ("workspace", str),
    "KETCH_RESULT_TTL": ("result_ttl", int),
    "KETCH_SCALEDOWN_GRACE": ("stop_grace", float),
    "KETCH_VERBOSE": ("verbose", bool),
}


@dataclass(frozen=True)
class Config:
    """All process settings in one place (see docs/configuration.md for the table)."""

    home: Path = Path("~/.ketch")
    server_host: str = "127.0.0.1"
    api_port: int = 0  # 0: pick a free port and record it in <home>/server.json
    call_port: int = 0
    environment: str = "main"
    workspace: str = "local"
    result_ttl: int = 7 * 24 * 3600
    stop_grace: float = 5.0
    verbose: bool = False

    @classmethod
    def load(cls, profile: str | None = None) -> Config:
        values: dict[str, Any] = {}
        path = Path(os.environ.get("KETCH_CONFIG_FILE", "~/.ketch.toml")).expanduser()
        if path.is_file():
            try:
                doc = tomllib.loads(path.read_text())
            except tomllib.TOMLDecodeError as exc:
                raise InvalidError(f"{path}: not valid TOML ({exc})") from exc
            name = profile or os.environ.get("KETCH_PROFILE") or doc.get("active", "default")
            section = doc.get(name, {})
            if not isinstance(section, dict):
                raise InvalidError(f"{path}: profile {name!r} is not a table")
            known = {f.name for f in fields(cls)}
            for key, raw in section.items():
                if key not in known:
                    raise InvalidError(f"{path}: unknown setting {key!r} in profile {name!r}")
                values[key] = raw
        for env_name, (field_name, typ) in _ENV.items():
            raw = os.environ.get(env_name)
            if raw is not None and raw != "":
                values[field_name] = _parse(env_name, raw, typ)
        cfg = cls(**{k: _coerce(k, v) for k, v in values.items()})
        return replace(cfg, home=cfg.home.expanduser().resolve())

    @property
    def server_file(self) -> Path:
        return self.home / "server.json"


def _parse(name: str, raw: str, typ: type) -> Any:
    if typ is bool:
        if raw.lower() in ("1", "true", "yes", "on"):
            return True
        if raw.lower() in ("0", "false", "no", "off"):
            return False
        raise InvalidError(f"{name}={raw!r}: expected true or false")
    try:
        return typ(raw)
    except ValueError as exc:
        raise InvalidError(f"{name}={raw!r}: expected {typ.__name__}") from exc


def _coerce(key: str, value: Any) -> Any:
    if key == "home":
        return Path(value)
    return value
