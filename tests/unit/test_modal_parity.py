"""The Modal parity table (scripts/modal_parity.py): every public name of the pinned `modal`
wheel is either in ketch or has a reason, no reason is stale, and docs/modal-parity.md is
what the script writes."""

from __future__ import annotations

import importlib.util
import sys
import types
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
REGENERATE = "regenerate it: .venv/bin/python scripts/modal_parity.py"


def _load_script() -> types.ModuleType:
    spec = importlib.util.spec_from_file_location(
        "modal_parity", ROOT / "scripts" / "modal_parity.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    # dataclasses look their module up in sys.modules while the class is being made.
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


mp = _load_script()


@pytest.fixture(scope="module")
def modal_source() -> object:
    # Stays under the per-test timeout; offline with an empty cache, the test skips.
    wheel = mp.wheel_path(timeout=90)
    if wheel is None:
        pytest.skip(
            f"{mp.WHEEL} could not be downloaded (pip download modal=={mp.MODAL_VERSION}) "
            "nor found in the cache (KETCH_MODAL_PARITY_CACHE, ~/.cache/ketch-modal-parity)"
        )
    return mp.ModalSource(wheel)


@pytest.mark.spec("P1")
def test_every_modal_name_is_accounted_for(modal_source: object) -> None:
    rows, problems = mp.compare(modal_source)
    assert not problems, "\n".join(problems) + "\nfix REASONS in scripts/modal_parity.py"
    # The table is the whole surface, not a handful of names.
    sections = {r.section for r in rows}
    assert sections == {"modal", "exception", *mp.OBJECTS}
    assert len(rows) > 300


@pytest.mark.spec("P1")
def test_docs_table_is_up_to_date(modal_source: object) -> None:
    rows, _ = mp.compare(modal_source)
    current = mp.DOC.read_text() if mp.DOC.exists() else ""
    assert current == mp.render(rows), f"docs/modal-parity.md is out of date; {REGENERATE}"


@pytest.mark.spec("P1")
def test_sample_statuses_match_ketch(modal_source: object) -> None:
    rows = {r.key: r for r in mp.compare(modal_source)[0]}
    assert rows["App.function"].status == mp.WORKS
    assert rows["Function.remote"].status == mp.WORKS
    assert rows["Image.imports"].status == mp.WORKS
    assert rows["Period(seconds=)"].status == mp.WORKS
    assert rows["exception.FunctionTimeoutError"].status == mp.WORKS
    assert rows["Proxy"].status == mp.NOT_APPLICABLE
    # An object ketch lacks: its members take the object's reason.
    import ketch

    if not hasattr(ketch, "Sandbox"):
        assert rows["Sandbox.exec"].status == mp.NOT_YET
        assert rows["Sandbox.exec"].note == mp.REASONS["Sandbox"][1]


@pytest.mark.spec("P1")
def test_missing_and_stale_reasons_are_reported(
    modal_source: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    reasons = dict(mp.REASONS)
    del reasons["Proxy"]
    reasons["App.run"] = (mp.NOT_YET, "ketch has this one")
    reasons["App.no_such_member"] = (mp.NOT_YET, "Modal has no such name")
    reasons["App.deploy"] = (mp.REFUSED, 'raises "a message ketch never says"')
    # `refused` means present and raising: an absent name cannot be refused.
    reasons["App.stop"] = (mp.REFUSED, 'raises "is not available inside a container"')
    monkeypatch.setattr(mp, "REASONS", reasons)
    problems = "\n".join(mp.compare(modal_source)[1])
    assert "unaccounted: modal Proxy" in problems
    assert "stale: REASONS['App.run']" in problems
    assert "stale: REASONS['App.no_such_member']" in problems
    assert "stale: REASONS['App.stop'] says 'refused' but ketch lacks it" in problems
    assert "REASONS['App.stop']: the quoted" not in problems
    assert "REASONS['App.deploy']: the quoted message is not in ketch's source" in problems


def _fake_wheel(path: Path) -> Path:
    files = {
        "modal/__init__.py": (
            "try:\n    from .app import App\n    from .sandbox import Box\n"
            "except Exception:\n    raise\n__all__ = ['App', 'Box', 'helper']\n"
        ),
        "modal/_object.py": (
            "class _Object:\n"
            "    def hydrate(self): ...\n"
            "    def _private(self): ...\n"
            "    @property\n    def object_id(self): ...\n"
        ),
        "modal/app.py": (
            "from ._object import _Object\nfrom ._utils import synchronize_api\n"
            "class _App(_Object):\n"
            "    limit = 3\n"
            "    def __init__(self, name=None, *, image=None):\n"
            "        self.tags = {}\n        self._hidden = 1\n"
            "    async def run(self): ...\n"
            "    @classmethod\n    def lookup(cls): ...\n"
            "    def hydrate(self): ...\n"
            "App = synchronize_api(_App)\n"
        ),
        "modal/sandbox/__init__.py": "from .sandbox import Box\n",
        "modal/sandbox/sandbox.py": (
            "from . import _box\nBox = synchronize_api(_box._Box, target_module=__name__)\n"
        ),
        "modal/sandbox/_box.py": "class _Box:\n    def exec(self): ...\n",
        "modal/exception.py": (
            "import signal\nAlias = int\nclass Error(Exception): ...\n"
            "class _Hidden(Error): ...\ndef simulate(): ...\n"
        ),
    }
    wheel = path / "fake.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        for name, text in files.items():
            zf.writestr(name, text)
    return wheel


@pytest.mark.spec("P1")
def test_reads_names_through_wrappers_and_bases(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(mp, "CONSTRUCTED", {"App"})
    src = mp.ModalSource(_fake_wheel(tmp_path))
    assert src.top_level() == ["App", "Box", "helper"]
    members = {m.name: m.kind for m in src.members("App")}
    assert members == {
        "(name=)": "parameter",
        "(image=)": "parameter",
        "limit": "attribute",
        "tags": "attribute",
        "run": "method",
        "lookup": "classmethod",
        "hydrate": "method",  # the subclass's own, listed once
        "object_id": "property",  # inherited from a base in the package
    }
    assert [m.name for m in src.members("Box")] == ["exec"]
    assert src.exception_names() == ["Alias", "Error", "simulate"]
