"""Inline secrets of image build steps (`run_function(secrets=[Secret.from_dict(...)])`).

An image spec is hashed, kept with every app version and shown by `ketch image`, so the
values may not stay in it. When a spec arrives, each inline secret of a build step is
replaced by a keyed digest of its values (HMAC with a key derived from the server's
secrets key: the same values give the same digest, so the image's hash and its cached
layers are stable, and the digest tells nothing of the values), and the values are kept
encrypted under `<home>/build-secrets/<digest>`, read only while the step runs.
"""

from __future__ import annotations

import copy
import hashlib
import hmac
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ketch._server.crypto import SecretBox
from ketch.exception import NotFoundError

__all__ = ["BuildSecrets"]


class BuildSecrets:
    def __init__(self, directory: Path, box: SecretBox) -> None:
        self._dir = Path(directory)
        self._box = box
        key = box.key_path.read_bytes().strip()
        self._key = hashlib.sha256(b"ketch build-step secrets\0" + key).digest()

    def seal(self, spec: Mapping[str, Any]) -> dict[str, Any]:
        """`spec` with every inline secret of its steps sealed (a spec without any comes
        back equal; one sealed already is left as it is)."""
        out = copy.deepcopy(dict(spec))
        for step in out.get("steps", []):
            for ref in step.get("secrets", []) if step.get("type") == "run_function" else []:
                values = ref.pop("values", None)
                if values is not None:
                    ref["digest"] = self._keep(values)
        return out

    def values(self, digest: str) -> dict[str, str]:
        try:
            data = (self._dir / digest).read_bytes()
        except (OSError, ValueError):
            raise NotFoundError(
                "an inline secret of this build step is not on this server (the image was "
                "defined against another server); deploy it again here"
            ) from None
        values: dict[str, str] = json.loads(self._box.decrypt(data))
        return values

    def _keep(self, values: Mapping[str, str]) -> str:
        canonical = json.dumps(dict(values), sort_keys=True, separators=(",", ":")).encode()
        digest = hmac.new(self._key, canonical, hashlib.sha256).hexdigest()
        path = self._dir / digest
        if not path.exists():
            self._dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            tmp = path.with_name(f".{digest}.{os.getpid()}.tmp")
            tmp.write_bytes(self._box.encrypt(canonical))
            os.chmod(tmp, 0o600)
            tmp.replace(path)
        return digest
