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
    "KETCH_GATEWAY_PORT": ("gateway_port", int),
    "KETCH_DOMAIN": ("domain", str),
    "KETCH_RATE_LIMIT": ("rate_limit", float),
    "KETCH_RATE_BURST": ("rate_burst", int),
    "KETCH_TRUSTED_PROXIES": ("trusted_proxies", str),
    "KETCH_TLS_CERT": ("tls_cert", str),
    "KETCH_TLS_KEY": ("tls_key", str),
    "KETCH_FORK_SERVER": ("fork_server", bool),
    "KETCH_FORK_TEMPLATES": ("fork_templates", int),
    "KETCH_FORK_DEPLOY_MB": ("fork_deploy_mb", int),
    "KETCH_PREFETCH": ("prefetch", int),
    "KETCH_PREFETCH_MS": ("prefetch_ms", float),
    "KETCH_REQUEST_TIMEOUT": ("request_timeout", float),
    "KETCH_MAX_QUEUE": ("max_queue", int),
    "KETCH_LOG_RETENTION_BYTES": ("log_retention_bytes", int),
    "KETCH_CALL_RECORDS": ("call_records", int),
    "KETCH_DICT_VALUE_LIMIT": ("dict_value_limit", int),
    "KETCH_QUEUE_ITEM_LIMIT": ("queue_item_limit", int),
    "KETCH_QUEUE_PARTITION_SIZE": ("queue_partition_size", int),
    "KETCH_MAX_FRAME_PREAUTH": ("max_frame_preauth", int),
    "KETCH_MAX_MESSAGE_BYTES": ("max_message_bytes", int),
    "KETCH_HELLO_TIMEOUT": ("hello_timeout", float),
    "KETCH_MAX_UNAUTHENTICATED": ("max_unauthenticated", int),
    "KETCH_OTEL_ENDPOINT": ("otel_endpoint", str),
    "KETCH_BACKEND": ("backend", str),
    "KETCH_RAY_ADDRESS": ("ray_address", str),
    "KETCH_MODAL_WIRE": ("modal_wire", str),
}

# Room a message needs besides its largest value (the key, the envelope).
_MESSAGE_ROOM = 1024 * 1024

# Settings for which an empty value means "off".
_MAY_BE_EMPTY = frozenset({"tls_cert", "tls_key", "otel_endpoint", "modal_wire", "ray_address"})
_PATHS = frozenset({"tls_cert", "tls_key"})


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
    gateway_port: int = 8000  # host-routed web traffic; taken -> the last one used, or free
    domain: str = "localhost"
    rate_limit: float = 200.0  # web requests per second per workspace
    rate_burst: int = 1000
    trusted_proxies: str = "-"  # comma-separated addresses whose X-Forwarded-For is kept
    # The gateway serves HTTPS with this certificate (PEM, chain) and key; empty: plain HTTP.
    tls_cert: str = ""
    tls_key: str = ""
    # Containers forked from a template process that has already imported the function
    # (fork server); off: every container is a fresh interpreter. At most `fork_templates`
    # templates are kept, the least recently used going first.
    fork_server: bool = True
    fork_templates: int = 16
    # Templates are started when a function is deployed (so that its first container is
    # forked too) while the templates' memory stays within this many MiB; past it the least
    # recently used go. 0: templates start with the first container, as before.
    fork_deploy_mb: int = 2048
    # Inputs of calls and maps the server keeps queued at each container beyond its free
    # slots, so that it never waits a round trip between inputs (0: none). The window is
    # sized to about `prefetch_ms` of work by the function's measured run time: slow
    # functions get none, and their inputs go to whichever container frees up first.
    prefetch: int = 16
    prefetch_ms: float = 20.0
    # A web request with no response after this many seconds gets a 303 to its result URL.
    request_timeout: float = 150.0
    # Inputs (calls and web requests) that may wait in one function pool's queue; past it,
    # calls fail with ResourceExhaustedError and web requests get 429.
    max_queue: int = 10_000
    # Stored container output and platform events per app; past it the oldest half goes.
    log_retention_bytes: int = 16 * 1024 * 1024
    # Web call records kept per app (spawned calls stay until their results expire).
    call_records: int = 1000
    # Shared state (Dict, Queue): the largest pickled Dict value and Queue item, in bytes,
    # and how many items one Queue partition holds before put() blocks or raises queue.Full.
    dict_value_limit: int = 1024**3
    queue_item_limit: int = 1024**2
    queue_partition_size: int = 5000
    # The call port (SDK clients, containers): the largest first frame of a connection that
    # has not said hello yet, the largest message after it, how long a hello may take, and
    # how many connections may be waiting for theirs at once (more are closed on arrival).
    max_frame_preauth: int = 64 * 1024
    max_message_bytes: int = 2 * 1024**3
    hello_timeout: float = 10.0
    max_unauthenticated: int = 128
    # OpenTelemetry (O5): the OTLP/HTTP collector traces go to (its base URL; the standard
    # OTEL_EXPORTER_OTLP_* variables refine it); empty: no tracing, nothing imported.
    otel_endpoint: str = ""
    # What runs containers: `local` (processes on this machine) or `ray` (actors on a Ray
    # cluster, at `ray_address`; empty: the cluster `ray start` made here). docs/ray.md.
    backend: str = "local"
    ray_address: str = ""
    # Modal's wire protocol (docs/modal-wire.md): a TCP port on server_host (0: any free
    # one, recorded in server.json) or unix:PATH for the official `modal` client; empty: off.
    modal_wire: str = ""

    @classmethod
    def load(cls, profile: str | None = None) -> Config:
        values: dict[str, Any] = {}
        path = Path(os.environ.get("KETCH_CONFIG_FILE") or "~/.ketch.toml").expanduser()
        if (
            "KETCH_CONFIG_FILE" in os.environ
            and os.environ["KETCH_CONFIG_FILE"]
            and not path.is_file()
        ):
            raise InvalidError(f"KETCH_CONFIG_FILE={str(path)!r}: no such file")
        if path.is_file():
            values.update(_read_profile(path, profile))
        for env_name, (field_name, typ) in _ENV.items():
            raw = os.environ.get(env_name)
            if raw is not None and raw != "":
                values[field_name] = _check(field_name, _parse(env_name, raw, typ), env_name)
        cfg = cls(**values)
        if cfg.max_message_bytes < cfg.dict_value_limit + _MESSAGE_ROOM:
            raise InvalidError(
                f"max_message_bytes (KETCH_MAX_MESSAGE_BYTES) is {cfg.max_message_bytes}: it "
                f"must be at least dict_value_limit ({cfg.dict_value_limit}) + {_MESSAGE_ROOM}"
                ", or the largest Dict value could not be sent; raise it or lower "
                "dict_value_limit"
            )
        if bool(cfg.tls_cert) != bool(cfg.tls_key):
            raise InvalidError(
                "tls_cert and tls_key (KETCH_TLS_CERT, KETCH_TLS_KEY) go together: "
                "set both to serve HTTPS, or neither"
            )
        return replace(
            cfg,
            home=cfg.home.expanduser().resolve(),
            tls_cert=_tls_path(cfg.tls_cert),
            tls_key=_tls_path(cfg.tls_key),
        )

    @property
    def server_file(self) -> Path:
        return self.home / "server.json"


def _read_profile(path: Path, profile: str | None) -> dict[str, Any]:
    """The settings of one profile of a ketch.toml, checked (names and types)."""
    try:
        doc = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise InvalidError(f"{path}: not valid TOML ({exc})") from exc
    except OSError as exc:
        raise InvalidError(f"{path}: cannot read it ({exc})") from exc
    active = doc.get("active")
    if active is not None and not isinstance(active, str):
        raise InvalidError(f"{path}: 'active' must name a profile (a string), got {active!r}")
    for key, value in doc.items():
        if key != "active" and not isinstance(value, dict):
            raise InvalidError(
                f"{path}: top-level setting {key!r} must sit in a profile table, e.g. [default]"
            )
    chosen = profile or os.environ.get("KETCH_PROFILE") or active
    name = chosen or "default"
    if name not in doc:
        if chosen:
            # A profile someone asked for by name must exist; a missing [default] is fine.
            profiles = ", ".join(sorted(k for k in doc if k != "active")) or "none"
            raise InvalidError(f"{path}: no profile {name!r} (profiles: {profiles})")
        return {}
    section = doc[name]
    known = {f.name for f in fields(Config)}
    values: dict[str, Any] = {}
    for key, raw in section.items():
        if key not in known:
            raise InvalidError(
                f"{path}: unknown setting {key!r} in profile {name!r} "
                f"(known: {', '.join(sorted(known))})"
            )
        values[key] = _check(key, raw, f"{path}: setting {key!r} in profile {name!r}")
    return values


def _kinds(key: str) -> tuple[type, ...]:
    """The value types a setting accepts, read off its default (so that a new setting
    needs no entry in a table here)."""
    default = next(f.default for f in fields(Config) if f.name == key)
    for kind, accepted in (
        (bool, (bool,)),
        (int, (int,)),
        (float, (int, float)),
        (Path, (str, Path)),
        (str, (str,)),
    ):
        if isinstance(default, kind):
            return accepted
    return (object,)


def _check(key: str, given: object, where: str) -> Any:
    """One setting's value with its type and range checked; `where` names it in errors."""
    kinds = _kinds(key)
    # bool is an int in Python; a port or a TTL of `true` is a mistake all the same.
    if not isinstance(given, kinds) or (isinstance(given, bool) and bool not in kinds):
        expected = " or ".join(k.__name__ for k in kinds)
        raise InvalidError(f"{where}: expected {expected}, got {given!r}")
    value: Any = given
    if key == "max_queue" and value < 1:
        raise InvalidError(f"{where}: must be at least 1, got {value}")
    if key == "request_timeout" and not 0 < value <= 86400:
        raise InvalidError(
            f"{where}: request_timeout is in seconds, more than 0 and at most 86400, got {value}"
        )
    if key == "max_frame_preauth" and not 1024 <= value <= 16 * 1024**2:
        raise InvalidError(
            f"{where}: must be between 1024 (a hello fits) and 16777216 bytes, got {value}"
        )
    if key == "hello_timeout" and not 0 < value <= 3600:
        raise InvalidError(
            f"{where}: hello_timeout is in seconds, more than 0 and at most 3600, got {value}"
        )
    if key == "max_unauthenticated" and value < 1:
        raise InvalidError(f"{where}: must be at least 1, got {value}")
    if key.endswith("_port") and not 0 <= value <= 65535:
        raise InvalidError(f"{where}: a port must be between 0 and 65535, got {value}")
    if kinds in ((int,), (int, float)) and value < 0:
        raise InvalidError(f"{where}: must not be negative, got {value}")
    if kinds in ((str,), (str, Path)) and not str(value) and key not in _MAY_BE_EMPTY:
        raise InvalidError(f"{where}: must not be empty")
    if key == "otel_endpoint" and value and not str(value).startswith(("http://", "https://")):
        raise InvalidError(
            f"{where}: the OTLP endpoint is an http:// or https:// URL (the collector's "
            f"OTLP/HTTP address, e.g. http://127.0.0.1:4318), got {value!r}"
        )
    if key == "modal_wire" and value:
        _check_modal_wire(str(value), where)
    if key in _PATHS and value and not os.path.isabs(os.path.expanduser(value)):
        # The server runs in its state directory: a relative path would name another file
        # there than where the command that started it was run.
        raise InvalidError(f"{where}: must be an absolute path (or start with ~), got {value!r}")
    if Path in kinds:
        return Path(value)
    if float in kinds:
        return float(value)
    return value


def _check_modal_wire(value: str, where: str) -> None:
    if value.startswith("unix:"):
        if not os.path.isabs(os.path.expanduser(value[5:])):
            raise InvalidError(f"{where}: unix:PATH needs an absolute path, got {value!r}")
        return
    if not value.isdigit() or not 0 <= int(value) <= 65535:
        raise InvalidError(
            f"{where}: the Modal front end listens on a port (0-65535) or unix:PATH, got {value!r}"
        )


def _tls_path(value: str) -> str:
    return os.path.expanduser(value) if value else ""


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
