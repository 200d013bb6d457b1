"""A real local OCI registry for tests: Debian's docker-registry on 127.0.0.1, seeded with
images built here from a root filesystem with umoci and pushed with skopeo."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

TOOLS = ("docker-registry", "skopeo", "umoci")
# Enough for the registry to answer its first request on a loaded machine.
_START_TIMEOUT = 60.0
_EPOCH = "2000-01-01T00:00:00Z"


def have_tools() -> bool:
    return all(shutil.which(t) for t in TOOLS)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def bcrypt_hash(password: str) -> str:
    """A bcrypt hash (all the registry's htpasswd accepts), made by the C library's crypt."""
    lib = ctypes.CDLL(ctypes.util.find_library("crypt") or "libcrypt.so.1")
    lib.crypt_gensalt.restype = ctypes.c_char_p
    lib.crypt_gensalt.argtypes = [ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p, ctypes.c_int]
    lib.crypt.restype = ctypes.c_char_p
    lib.crypt.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
    salt = lib.crypt_gensalt(b"$2b$", 5, None, 0)
    hashed: bytes = lib.crypt(password.encode(), salt)
    return hashed.decode()


class Registry:
    """One docker-registry process serving `root`, with basic auth when `users` is given."""

    def __init__(self, root: Path, users: dict[str, str] | None = None) -> None:
        self.root = root
        self.port = free_port()
        self.host = f"127.0.0.1:{self.port}"
        self.users = users or {}
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Registry:
        self.root.mkdir(parents=True, exist_ok=True)
        auth = ""
        if self.users:
            lines = [f"{u}:{bcrypt_hash(p)}" for u, p in self.users.items()]
            (self.root / "htpasswd").write_text("\n".join(lines) + "\n")
            auth = (
                f"auth:\n  htpasswd:\n    realm: ketch-test\n    path: {self.root / 'htpasswd'}\n"
            )
        config = self.root / "config.yml"
        config.write_text(
            "version: 0.1\n"
            "log:\n  level: warn\n"
            f"storage:\n  filesystem:\n    rootdirectory: {self.root / 'data'}\n"
            f"http:\n  addr: {self.host}\n" + auth
        )
        log = (self.root / "registry.log").open("wb")
        self.proc = subprocess.Popen(
            ["docker-registry", "serve", str(config)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + _START_TIMEOUT
        while not self._answers():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                out = (self.root / "registry.log").read_text(errors="replace")
                self.stop()
                raise RuntimeError(f"docker-registry did not start:\n{out}")
            time.sleep(0.05)
        return self

    def _answers(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://{self.host}/v2/", timeout=2):
                return True
        except urllib.error.HTTPError:
            return True  # 401 from a registry with auth: it is up
        except OSError:
            return False

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def push(self, layout: Path, tag: str, dest: str) -> str:
        """Copy `tag` of the OCI layout to this registry as `dest` ("seed:1")."""
        ref = f"{self.host}/{dest}"
        creds = []
        if self.users:
            user, password = next(iter(self.users.items()))
            creds = ["--dest-creds", f"{user}:{password}"]
        _run(
            "skopeo",
            "copy",
            "--quiet",
            "--dest-tls-verify=false",
            *creds,
            f"oci:{layout}:{tag}",
            f"docker://{ref}",
        )
        return ref


def _run(*argv: str) -> None:
    # HOME elsewhere: skopeo must not read or write the user's container settings.
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": "/tmp"}
    result = subprocess.run(argv, capture_output=True, text=True, env=env, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:3])} failed: {result.stdout}{result.stderr}")


def build_layout(source_root: Path, work: Path) -> Path:
    """An OCI layout under `work` with two tags made from a copy of `source_root`: "full"
    (the root filesystem as it is) and "nopy" (the same with Python removed)."""
    layout = work / "oci"
    bundle = work / "bundle"
    _run("umoci", "init", "--layout", str(layout))
    _run("umoci", "new", "--image", f"{layout}:full")
    _run("umoci", "unpack", "--image", f"{layout}:full", str(bundle))
    rootfs = bundle / "rootfs"
    subprocess.run(["cp", "-a", f"{source_root}/.", str(rootfs)], check=True)
    # No history and a fixed date: the same root filesystem gives the same digests, so a
    # server's cache of pulls (keyed by digest) holds one copy across sessions.
    fixed = ("--no-history", "--created", _EPOCH)
    _run(
        "umoci",
        "repack",
        "--no-history",
        "--refresh-bundle",
        "--image",
        f"{layout}:full",
        str(bundle),
    )
    _run("umoci", "config", *fixed, "--image", f"{layout}:full", "--config.env", "SEEDED=1")
    for pattern in ("usr/bin/python3*", "usr/lib/python3*"):
        for path in rootfs.glob(pattern):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
    for parent in ("usr/bin", "usr/lib"):
        # Their times as before the deletes, for the same digest every time.
        stat = (source_root / parent).stat()
        os.utime(rootfs / parent, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    _run("umoci", "repack", "--no-history", "--image", f"{layout}:nopy", str(bundle))
    _run("umoci", "config", *fixed, "--image", f"{layout}:nopy")
    shutil.rmtree(bundle)
    return layout


def fake_uv_python(source_root: Path, dest: Path, version: str) -> Path:
    """A directory shaped like uv's managed interpreters holding `source_root`'s own Python
    (a stand-in: no python-build-standalone can be downloaded here). Within an image made
    from the same root filesystem its libraries are all there, so it runs from /usr/local."""
    dist = dest / f"cpython-{version}.99-linux-{os.uname().machine}-gnu"
    (dist / "bin").mkdir(parents=True)
    shutil.copy2(source_root / "usr" / "bin" / f"python{version}", dist / "bin")
    (dist / "bin" / "python3").symlink_to(f"python{version}")
    shutil.copytree(
        source_root / "usr" / "lib" / f"python{version}",
        dist / "lib" / f"python{version}",
        symlinks=True,
        ignore=shutil.ignore_patterns("__pycache__", "dist-packages"),
    )
    return dist
