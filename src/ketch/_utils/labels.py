"""Web endpoint labels and host names (SPEC W5).

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

MAX_LABEL = 63
_VALID = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")


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
    if not _VALID.match(label):
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
