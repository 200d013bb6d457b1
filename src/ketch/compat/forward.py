"""The `modal` command that `ketch compat install` puts in an environment: forwards its
arguments to `ketch` (`modal run app.py` is `ketch run app.py`) while the shim is on."""

from __future__ import annotations

import sys


def main() -> int:
    from ketch.compat.shim import alias_active, real_modal_installed

    if real_modal_installed():
        print(
            "modal: the real modal package is installed here; this forwarder to ketch is "
            "off (remove it with `ketch compat uninstall`)",
            file=sys.stderr,
        )
        return 2
    if not alias_active():
        print(
            "modal: the ketch compat shim is off in this environment; turn it on with "
            "`ketch compat install`, or run `ketch` directly",
            file=sys.stderr,
        )
        return 2
    from ketch.cli import main as ketch_main

    sys.argv[0] = "ketch"
    ketch_main()
    return 0
