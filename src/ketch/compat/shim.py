"""Makes `import modal` (and `modal.<sub>`) resolve to ketch when the real modal is absent."""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
import types
from collections.abc import Sequence

_installed = False


class _Alias(importlib.abc.Loader):
    def __init__(self, target: str) -> None:
        self.target = target

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType:
        return importlib.import_module(self.target)

    def exec_module(self, module: types.ModuleType) -> None:
        pass  # the ketch module is already executed


class _ModalFinder(importlib.abc.MetaPathFinder):
    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: types.ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname != "modal" and not fullname.startswith("modal."):
            return None
        ketch_name = "ketch" + fullname[len("modal") :]
        if importlib.util.find_spec(ketch_name) is None:
            return None
        return importlib.machinery.ModuleSpec(fullname, _Alias(ketch_name))


def real_modal_installed() -> bool:
    """Whether a `modal` other than this alias can be imported (asked of every finder but
    ours, so the answer holds with the alias already installed)."""
    module = sys.modules.get("modal")
    if module is not None:
        return not module.__name__.startswith("ketch")
    for finder in sys.meta_path:
        if isinstance(finder, _ModalFinder):
            continue
        find = getattr(finder, "find_spec", None)
        if find is not None and find("modal", None) is not None:
            return True
    return False


def alias_active() -> bool:
    return _installed


def install_modal_alias() -> bool:
    """Alias `modal` to ketch for this process; a no-op when the real modal is installed."""
    global _installed
    if _installed:
        return True
    if "modal" in sys.modules or real_modal_installed():
        return False
    sys.meta_path.insert(0, _ModalFinder())
    _installed = True
    return True
