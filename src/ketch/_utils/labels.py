"""The naming rules, each written once: names of apps, secrets, volumes, Dicts, Queues and
environments; web endpoint labels and host names (SPEC W5); custom domains.

The patterns are strings as well as compiled, for the API's models (and so its OpenAPI
document) to state the same rule the SDK and the server check.

The host label of an endpoint is `<workspace>[-<env>]--<label>[-dev]`. DNS limits a label to
63 characters; a longer one keeps its first characters and ends with `-` and the first six
hex digits of the SHA-256 of the full label, followed by `-dev` for ephemeral apps:
`full[: 63 - 7 - len(suffix)] + "-" + sha256(full)[:6] + suffix`. Without `-dev` that is the
first 56 characters, `-`, and 6 hex digits.
"""

from __future__ import annotations

import hashlib
import re

from ketch.exception import InvalidError

NAME_PATTERN = r"^[a-zA-Z0-9][a-zA-Z0-9._-]{0,63}$"
NAME_RULE = "use letters, digits, '.', '_' or '-' (at most 64, starting with a letter or digit)"
MAX_LABEL = 63
LABEL_PATTERN = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"
# A host name, or "*." and one: `*.example.com` matches any name under example.com.
DOMAIN_PATTERN = r"^(\*\.)?([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$"

_NAME = re.compile(NAME_PATTERN)
_LABEL = re.compile(LABEL_PATTERN)
_DOMAIN = re.compile(DOMAIN_PATTERN)


def is_name(name: object) -> bool:
    return isinstance(name, str) and _NAME.match(name) is not None


def validate_name(kind: str, name: object) -> str:
    """`name` if it is a valid name of a `kind` ("secret", "volume", "environment", ...)."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise InvalidError(f"invalid {kind} name {name!r}: {NAME_RULE}")
    return name


def is_domain(domain: str) -> bool:
    """Whether `domain` (lower-cased) may be a custom domain of an endpoint."""
    return _DOMAIN.match(domain) is not None


def slugify(text: str) -> str:
    """Lowercase letters, digits and single dashes; what a generated label is made of."""
    slug = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return slug or "endpoint"


def default_label(app_name: str, function: str, method: str | None = None) -> str:
    parts = [app_name, function] + ([method] if method else [])
    return slugify("-".join(parts))


def validate_label(label: str) -> str:
    """A user-chosen label is checked, never rewritten."""
    if not isinstance(label, str) or not label:
        raise InvalidError("a web label must be a non-empty string")
    if len(label) > MAX_LABEL:
        raise InvalidError(f"web label {label!r} is {len(label)} characters; the limit is 63")
    if not _LABEL.match(label):
        raise InvalidError(
            f"web label {label!r} may only use lowercase letters, digits and '-', and may not "
            "start or end with '-'"
        )
    if label.isdigit():
        raise InvalidError(f"web label {label!r} may not be all digits")
    return label


def host_label(workspace: str, environment: str, label: str, *, ephemeral: bool) -> str:
    env = "" if environment in ("main", "") else f"-{slugify(environment)}"
    full = f"{slugify(workspace)}{env}--{label}"
    suffix = "-dev" if ephemeral else ""
    if len(full) + len(suffix) <= MAX_LABEL:
        return full + suffix
    digest = hashlib.sha256(full.encode()).hexdigest()[:6]
    keep = MAX_LABEL - 7 - len(suffix)
    return f"{full[:keep]}-{digest}{suffix}"
