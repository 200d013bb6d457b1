"""`ketch compat install | uninstall | status`: the opt-in `import modal` shim for a whole
Python environment (a .pth file in its site-packages) and a `modal` command forwarding to
`ketch` (a script next to the interpreter's)."""

from __future__ import annotations

import os
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path

from ketch.compat.shim import real_modal_installed
from ketch.exception import InvalidError

PTH_NAME = "ketch_modal_shim.pth"
# Read by the interpreter at start-up from site-packages: a line that starts with `import`
# is run. It only adds a finder; `modal` is resolved when (and if) something imports it.
PTH_TEXT = (
    "# Added by `ketch compat install`: `import modal` resolves to ketch while the real modal\n"
    "# is absent. Remove with `ketch compat uninstall`.\n"
    "import ketch.compat.shim as _ketch_shim; _ketch_shim.install_modal_alias()\n"
)
SCRIPT_MARK = "# ketch compat: forwards `modal` to `ketch`"


@dataclass
class Places:
    site_dir: Path
    scripts_dir: Path

    @property
    def pth(self) -> Path:
        return self.site_dir / PTH_NAME

    @property
    def script(self) -> Path:
        return self.scripts_dir / "modal"


def places(target: str | None, scripts: str | None) -> Places:
    """This environment's site-packages and scripts folder, or the ones given."""
    site_dir = Path(target) if target else Path(sysconfig.get_paths()["purelib"])
    if scripts:
        scripts_dir = Path(scripts)
    elif target:
        scripts_dir = Path(target) / "bin"
    else:
        scripts_dir = Path(sysconfig.get_paths()["scripts"])
    return Places(site_dir, scripts_dir)


def _ours(script: Path) -> bool:
    try:
        return SCRIPT_MARK in script.read_text(errors="replace")
    except OSError:
        return False


def install(where: Places) -> list[str]:
    if real_modal_installed():
        raise InvalidError(
            "the real `modal` package is installed in this environment; the shim only works "
            "where it is absent (uninstall modal, or use a separate environment)"
        )
    if where.script.exists() and not _ours(where.script):
        raise InvalidError(f"{where.script} exists and is not ketch's; not replacing it")
    where.site_dir.mkdir(parents=True, exist_ok=True)
    where.pth.write_text(PTH_TEXT)
    where.scripts_dir.mkdir(parents=True, exist_ok=True)
    where.script.write_text(
        f"#!{sys.executable}\n{SCRIPT_MARK} (remove with `ketch compat uninstall`)\n"
        "import sys\n\nfrom ketch.compat.forward import main\n\nsys.exit(main())\n"
    )
    os.chmod(where.script, 0o755)
    return [str(where.pth), str(where.script)]


def uninstall(where: Places) -> list[str]:
    removed = []
    if where.pth.exists():
        where.pth.unlink()
        removed.append(str(where.pth))
    if where.script.exists() and _ours(where.script):
        where.script.unlink()
        removed.append(str(where.script))
    return removed


def status(where: Places) -> dict[str, object]:
    return {
        "shim_file": str(where.pth),
        "installed": where.pth.exists(),
        "modal_command": str(where.script) if _ours(where.script) else None,
        "real_modal_installed": real_modal_installed(),
    }
