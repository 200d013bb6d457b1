"""Images from OCI/Docker registries (SPEC I2): pulled with skopeo, unpacked with umoci.

A pulled image becomes the bottom layer of a root-filesystem build (`DirectoryBase`), cached
under the root-filesystem cache by the digest of its manifest, so that a tag that moved is
pulled again and an unchanged one is not. Registries on the loopback interface are spoken
to over plain HTTP, as Docker does for them; any other must have a valid TLS certificate.
Credentials come from a Secret with REGISTRY_USERNAME and REGISTRY_PASSWORD, as on Modal.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

from ketch._images import python_dist
from ketch._images.process import ImageBuildError
from ketch._images.rootfs import DEFAULT_PATH, DirectoryBase, ImageConfig, _clean_stale, _locked

LogFn = Callable[[str], None]
INSTALL_HINT = (
    "Image.from_registry needs skopeo and umoci (Debian/Ubuntu: apt-get install skopeo "
    "umoci; scripts/setup does this when run as root)"
)
_OK = ".ok"


class RegistryError(Exception):
    """A pull that failed, in one line naming the registry or the image."""


SecretFn = Callable[[], Mapping[str, str] | None]


class RegistryBase:
    """The bottom layer of an image from a registry: pulled when the build needs it.

    What the pull finds (the manifest's digest, the image's configuration, where its
    Python is) is known only after `ensure`; the builder reads `key` and `config` after
    it, as it does for every base. `secret_env` gives the registry credentials then, so
    that they are read only when a pull happens and are never kept.
    """

    def __init__(
        self,
        ref: str,
        *,
        python_version: str,
        add_python: str | None = None,
        secret_env: SecretFn | None = None,
        origin: str | None = None,
    ) -> None:
        self.ref = ref
        self.python_version = python_version
        self.add_python = add_python
        self.origin = origin or f'from_registry("{ref}")'
        self._secret_env = secret_env
        self._pulled: DirectoryBase | None = None
        self._python: str | None = None

    @property
    def description(self) -> str:
        return f"registry image {self.ref}"

    @property
    def key(self) -> str:
        return self._done().key

    @property
    def config(self) -> ImageConfig:
        return self._done().config

    @property
    def python(self) -> str:
        """The interpreter's path inside the built image."""
        self._done()
        assert self._python is not None
        return self._python

    def _done(self) -> DirectoryBase:
        if self._pulled is None:
            raise RuntimeError(f"{self.description} is not pulled yet (call ensure first)")
        return self._pulled

    def cached(self, cache: Path) -> bool:
        # Whether the tag still names what is cached is the registry's to say, at ensure.
        return False

    async def ensure(self, cache: Path, log: LogFn) -> Path:
        try:
            env = self._secret_env() if self._secret_env is not None else None
            pulled = await pull(self.ref, cache, log, env)
            if self.add_python is not None:
                self._python = python_dist.interpreter(self.add_python)
            else:
                self._python = _check_python(self.ref, pulled, self.python_version, log)
        except RegistryError as exc:
            raise ImageBuildError(self.origin, "", str(exc)) from None
        self._pulled = pulled
        return pulled.root


def _in_root(root: Path, path: str) -> Path | None:
    """`path` of the image resolved within its root: an absolute symlink in the image
    points into the image, never at the host's file of that name."""
    current = root / path.lstrip("/")
    for _ in range(40):
        if not current.is_symlink():
            return current if current.is_file() else None
        target = os.readlink(current)
        current = root / target.lstrip("/") if target.startswith("/") else current.parent / target
    return None


def find_python(root: Path, search_path: str) -> tuple[str, str | None] | None:
    """The first python3 on the image's PATH, as (its path in the image, its "3.X"
    version when its file or library directory names it)."""
    for directory in search_path.split(":"):
        if not directory.startswith("/"):
            continue
        candidate = f"{directory.rstrip('/')}/python3"
        real = _in_root(root, candidate)
        if real is None:
            continue
        named = re.fullmatch(r"python(3\.\d+)", real.name)
        if named:
            return candidate, named.group(1)
        libs = sorted((real.parent.parent / "lib").glob("python3.*/os.py"))
        versions = [p.parent.name.removeprefix("python") for p in libs]
        return candidate, versions[0] if len(versions) == 1 else None
    return None


def _check_python(ref: str, pulled: DirectoryBase, want: str, log: LogFn) -> str:
    found = find_python(pulled.root, pulled.config.env.get("PATH", DEFAULT_PATH))
    if found is None:
        raise RegistryError(
            f"{ref} has no python3 on its PATH, and ketch runs functions with Python; "
            f'pass add_python="{want}" to add one'
        )
    path, version = found
    if version is None:
        log(f"from_registry {ref}: using {path} (its version could not be read from its name)")
    elif version != want:
        raise RegistryError(
            f"{ref} has Python {version} ({path}), but the image is for Python {want}; "
            f'pass add_python="{want}", or run the app with Python {version}'
        )
    return path


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


@contextlib.contextmanager
def _auth_file(host: str, secret_env: Mapping[str, str] | None) -> Iterator[Path | None]:
    """The login as a containers auth file only the server can read, rather than on a
    command line every local user can see in the process list."""
    if not secret_env:
        yield None
        return
    user = secret_env.get("REGISTRY_USERNAME")
    password = secret_env.get("REGISTRY_PASSWORD")
    if not user or not password:
        raise RegistryError(
            "the registry secret needs both REGISTRY_USERNAME and REGISTRY_PASSWORD"
        )
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    with tempfile.TemporaryDirectory(prefix="ketch-registry-auth-") as private:
        path = Path(private) / "auth.json"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump({"auths": {host: {"auth": token}}}, f)
        yield path


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
        return f"no image or tag {ref} in registry {host}"
    if any(s in text for s in ("connection refused", "no such host", "i/o timeout", "dial tcp")):
        return f"cannot reach registry {host} (for {ref})"
    if any(s in text.lower() for s in ("unauthorized", "authentication required", "denied")):
        return f"registry {host} refused access to {ref} (missing or wrong credentials)"
    found = re.search(r'msg="([^"]+)"', output)
    return f"{ref}: {found.group(1) if found else text[-300:]}"


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
    # Never the server's HOME or Docker settings: only what the image asks for is used.
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": tempfile.gettempdir()}
    with _auth_file(host, secret_env) as auth:
        login = [] if auth is None else ["--authfile", str(auth)]
        code, out = await _run(
            [skopeo, "inspect", *tls, *login, "--format", "{{.Digest}}", f"docker://{ref}"], env
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
        # Two builds of one image pull it once; the second finds it cached.
        async with _locked(final.with_name(final.name + ".lock")):
            if (final / _OK).is_file():
                log(f"from_registry {ref}: {digest[:19]} cached")
                return _base(ref, key, final)
            _clean_stale(final)
            log(f"from_registry {ref}: pulling {digest[:19]}")
            # skopeo copy names the source's options --src-*; their values stay as they are.
            src = [f"--src-{a[2:]}" if a.startswith("--") else a for a in [*tls, *login]]
            await _fetch((skopeo, umoci), ref, src, digest, final, env)
    return _base(ref, key, final)


async def _fetch(
    tools: tuple[str, str],
    ref: str,
    flags: list[str],
    digest: str,
    final: Path,
    env: Mapping[str, str],
) -> None:
    skopeo, umoci = tools
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{final.name}-", dir=final.parent))
    try:
        code, out = await _run(
            [skopeo, "copy", *flags, f"docker://{ref}", f"oci:{tmp / 'layout'}:image"], env
        )
        if code != 0:
            raise RegistryError(_one_line(ref, out))
        code, out = await _run(
            [umoci, "unpack", "--image", f"{tmp / 'layout'}:image", str(tmp / "bundle")], env
        )
        if code != 0:
            raise RegistryError(f"{ref}: could not unpack it: {' '.join(out.split())[-300:]}")
        shutil.rmtree(tmp / "layout")
        os.chmod(tmp, 0o755)
        # bwrap binds the host's resolver file here; the mount point must be a file.
        etc = tmp / "bundle" / "rootfs" / "etc"
        etc.mkdir(exist_ok=True)
        resolv = etc / "resolv.conf"
        if resolv.is_symlink():
            resolv.unlink()
        resolv.touch()
        (tmp / "ref").write_text(f"{ref}\n{digest}\n")
        (tmp / _OK).touch()
        os.rename(tmp, final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _base(ref: str, key: str, final: Path) -> DirectoryBase:
    return DirectoryBase(
        key=key,
        root=final / "bundle" / "rootfs",
        description=f"registry image {ref}",
        config=_config(final / "bundle"),
    )
