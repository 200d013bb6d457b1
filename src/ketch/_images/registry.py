"""Images from OCI/Docker registries (SPEC I2): pulled with skopeo, unpacked with umoci.

A pulled image becomes the bottom layer of a root-filesystem build (`DirectoryBase`), cached
under the root-filesystem cache by the digest of its manifest, so that a tag that moved is
pulled again and an unchanged one is not. Registries on the loopback interface are spoken
to over plain HTTP, as Docker does for them; any other must have a valid TLS certificate.
Credentials come from a Secret with REGISTRY_USERNAME and REGISTRY_PASSWORD, as on Modal.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path

from ketch._images.rootfs import DEFAULT_PATH, DirectoryBase, ImageConfig

LogFn = Callable[[str], None]
INSTALL_HINT = (
    "Image.from_registry needs skopeo and umoci (Debian/Ubuntu: apt-get install skopeo "
    "umoci; scripts/setup does this when run as root)"
)
_OK = ".ok"


class RegistryError(Exception):
    """A pull that failed, in one line naming the registry or the image."""


def registry_host(ref: str) -> str:
    """The registry part of an image reference (Docker Hub when there is none)."""
    first, sep, _ = ref.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost"):
        return first
    return "docker.io"


def _loopback(host: str) -> bool:
    name = (
        host.rsplit(":", 1)[0].strip("[]") if not host.startswith("[") else host[1:].split("]")[0]
    )
    return name in ("localhost", "::1") or name.startswith("127.")


def _tools() -> tuple[str, str]:
    skopeo, umoci = shutil.which("skopeo"), shutil.which("umoci")
    if skopeo is None or umoci is None:
        raise RegistryError(INSTALL_HINT)
    return skopeo, umoci


def _creds(secret_env: Mapping[str, str] | None) -> list[str]:
    if not secret_env:
        return []
    user = secret_env.get("REGISTRY_USERNAME")
    password = secret_env.get("REGISTRY_PASSWORD")
    if not user or not password:
        raise RegistryError(
            "from_registry: the secret needs REGISTRY_USERNAME and REGISTRY_PASSWORD"
        )
    return ["--creds", f"{user}:{password}"]


async def _run(argv: list[str], env: Mapping[str, str] | None = None) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env=dict(env) if env is not None else None,
    )
    out, _ = await proc.communicate()
    return proc.returncode or 0, out.decode(errors="replace")


def _one_line(ref: str, output: str) -> str:
    """skopeo's reason, in words a user acts on, naming what could not be had."""
    host = registry_host(ref)
    text = " ".join(output.split())
    if "manifest unknown" in text or "not found" in text.lower():
        return f"from_registry: {ref}: no such image or tag in registry {host}"
    if any(s in text for s in ("connection refused", "no such host", "i/o timeout", "dial tcp")):
        return f"from_registry: cannot reach registry {host} ({ref})"
    if "unauthorized" in text.lower() or "authentication required" in text.lower():
        return f"from_registry: registry {host} refused the credentials for {ref}"
    found = re.search(r'msg="([^"]+)"', output)
    return f"from_registry: {ref}: {found.group(1) if found else text[-300:]}"


def _config(bundle: Path) -> ImageConfig:
    """The image's environment, working directory, user and command, from the runtime
    configuration umoci writes beside the root filesystem."""
    data = json.loads((bundle / "config.json").read_text())
    process = data.get("process") or {}
    env = {"PATH": DEFAULT_PATH}
    for item in process.get("env") or []:
        key, sep, value = str(item).partition("=")
        if sep:
            env[key] = value
    cwd = process.get("cwd") or None
    args = tuple(str(a) for a in process.get("args") or ()) or None
    user = process.get("user") or {}
    uid = user.get("uid")
    return ImageConfig(
        env=env,
        workdir=None if cwd in (None, "/") else cwd,
        user=None if not uid else str(uid),
        cmd=args,
    )


async def pull(
    ref: str, cache: Path, log: LogFn, secret_env: Mapping[str, str] | None = None
) -> DirectoryBase:
    """The image `ref` unpacked as a root filesystem under `cache` (pulled if its digest is
    not there yet). Raises RegistryError, in one line, when it cannot be had."""
    skopeo, umoci = _tools()
    host = registry_host(ref)
    tls = ["--tls-verify=false"] if _loopback(host) else []
    creds = _creds(secret_env)
    # Never the server's HOME or Docker settings: only what the image asks for is used.
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": tempfile.gettempdir()}
    code, out = await _run(
        [skopeo, "inspect", *tls, *creds, "--format", "{{.Digest}}", f"docker://{ref}"], env
    )
    if code != 0:
        raise RegistryError(_one_line(ref, out))
    digest = out.strip().splitlines()[-1]
    key = hashlib.sha256(f"registry:{digest}".encode()).hexdigest()
    final = cache / "registry" / key[:24]
    if (final / _OK).is_file():
        log(f"from_registry {ref}: {digest[:19]} cached")
        return _base(ref, key, final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{final.name}-", dir=final.parent))
    try:
        log(f"from_registry {ref}: pulling {digest[:19]}")
        code, out = await _run(
            [
                skopeo,
                "copy",
                *[f"--src-{a[2:]}" for a in tls],
                *_src(creds),
                f"docker://{ref}",
                f"oci:{tmp / 'layout'}:image",
            ],
            env,
        )
        if code != 0:
            raise RegistryError(_one_line(ref, out))
        code, out = await _run(
            [umoci, "unpack", "--image", f"{tmp / 'layout'}:image", str(tmp / "bundle")], env
        )
        if code != 0:
            raise RegistryError(f"from_registry: {ref}: could not unpack it: {out.strip()[-300:]}")
        shutil.rmtree(tmp / "layout")
        os.chmod(tmp, 0o755)
        # bwrap binds the host's resolver file here; the mount point must exist.
        etc = tmp / "bundle" / "rootfs" / "etc"
        etc.mkdir(exist_ok=True)
        (etc / "resolv.conf").touch()
        (tmp / "ref").write_text(f"{ref}\n{digest}\n")
        (tmp / _OK).touch()
        if final.exists():
            shutil.rmtree(final)
        os.rename(tmp, final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return _base(ref, key, final)


def _src(creds: list[str]) -> list[str]:
    return ["--src-creds", creds[1]] if creds else []


def _base(ref: str, key: str, final: Path) -> DirectoryBase:
    return DirectoryBase(
        key=key,
        root=final / "bundle" / "rootfs",
        description=f"registry image {ref}",
        config=_config(final / "bundle"),
    )
