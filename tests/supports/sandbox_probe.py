"""A program run inside sandboxes by tests/integration/test_sandboxes.py: it looks at what
of the host and of the server it can reach, and prints that as JSON."""

from __future__ import annotations

import json
import os
import sys


def _try_read(path: str) -> str:
    try:
        with open(path, "rb") as fh:
            fh.read(1)
        return "read"
    except OSError as exc:
        return type(exc).__name__


def _try_write(path: str) -> str:
    try:
        with open(path, "w") as fh:
            fh.write("x")
        return "written"
    except OSError as exc:
        return type(exc).__name__


def main() -> None:
    home, server_pid, sockets = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    with open("/proc/self/status") as fh:
        status = fh.read()
    caps = next(line.split()[1] for line in status.splitlines() if line.startswith("CapEff"))
    pids = [int(p) for p in os.listdir("/proc") if p.isdigit()]
    out = {
        "token": _try_read(os.path.join(home, "token")),
        "secret_key": _try_read(os.path.join(home, "secret.key")),
        "store": _try_read(os.path.join(home, "ketch.db")),
        "call_socket": os.path.exists(os.path.join(sockets, "call.sock")),
        "api_socket": os.path.exists(os.path.join(sockets, "api.sock")),
        "server_seen": server_pid in pids,
        "caps": int(caps, 16),
        "env_keys": sorted(k for k in os.environ if k.startswith("KETCH") or k == "PYTHONPATH"),
        "usr_write": _try_write("/usr/ketch-probe"),
        "tmp": sorted(os.listdir("/tmp")),
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
