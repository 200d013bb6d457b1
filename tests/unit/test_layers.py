"""Which part of ketch may import which (docs/architecture.md, "Parts and layers").

Every module under src/ketch is parsed, never imported, and each `ketch.*` import it makes
is collected wherever it is written: at the top, inside a function, under TYPE_CHECKING;
relative imports are resolved. An import of another part must be allowed by MAY_IMPORT,
and a `_private` name may not be imported from another part. What breaks a rule today and
is being removed is listed, with why, in the allow-lists below; they only shrink.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src"

# Module-name prefix -> part; the longest prefix wins. A module that fits none is an error:
# a new top-level module must be placed in a part here.
PARTS: dict[str, str] = {
    "ketch.exception": "exception",
    "ketch.config": "config",
    # Plain values the SDK builds and the server checks with the same code.
    "ketch.retries": "values",
    "ketch.secret": "values",
    "ketch.image": "values",
    "ketch._image_files": "values",
    "ketch._image_helpers": "values",
    "ketch._image_function": "values",
    "ketch._image_conda": "values",
    "ketch.schedule": "values",
    "ketch.gpu": "values",
    "ketch._utils": "_utils",
    # Root-filesystem images: the Dockerfile language and build contexts (which the SDK
    # checks and hashes where an image is defined) and the layered builder the server runs.
    "ketch._images": "_images",
    "ketch._gateway": "_gateway",
    "ketch._backends": "_backends",
    "ketch._server": "_server",
    # The gRPC front end for Modal's own client runs in the server process.
    "ketch._modal_wire": "_server",
    "ketch._runtime": "_runtime",
    # The sandbox agent runs as a script on the standard library and msgpack alone; the
    # server shares its byte relay for tunnels.
    "ketch._runtime.agent": "agent",
    "ketch._client": "_client",
    "ketch.cli": "cli",
    "ketch.compat": "compat",
    # The public SDK; "ketch" is the package itself (ketch/__init__) only.
    "ketch": "sdk",
    "ketch.app": "sdk",
    "ketch.functions": "sdk",
    "ketch._function_call": "sdk",
    "ketch._map": "sdk",
    "ketch._app_spec": "sdk",
    "ketch.cls": "sdk",
    "ketch._partial": "sdk",
    "ketch.dict": "sdk",
    "ketch.queue": "sdk",
    "ketch.volume": "sdk",
    "ketch.web": "sdk",
    "ketch._current": "sdk",
    "ketch._output": "sdk",
    "ketch._app_lookup": "sdk",
    "ketch._handle_options": "sdk",
    "ketch._autoscaler": "sdk",
    "ketch.sandbox": "sdk",
    "ketch._sandbox_io": "sdk",
    "ketch._sandbox_fs": "sdk",
    "ketch._forward": "sdk",
    "ketch.experimental": "sdk",
}

_BASE = frozenset({"exception", "values", "_utils"})

MAY_IMPORT: dict[str, frozenset[str]] = {
    "exception": frozenset(),
    "config": frozenset({"exception"}),
    # Image.from_dockerfile parses and hashes with the builder's own rules (_images).
    "values": frozenset({"exception", "_utils", "_images"}),
    "_utils": frozenset({"exception", "values"}),  # FunctionOptions holds Retries and Secrets
    "_images": frozenset({"exception", "values", "_utils"}),
    # A library that knows only its Resolver protocol.
    "_gateway": frozenset({"exception", "_utils"}),
    # A sandbox mounts a built root filesystem with the builder's own code (_images).
    "_backends": frozenset({"exception", "config", "_utils", "_images"}),
    "_server": _BASE | {"config", "_gateway", "_backends", "_images", "agent"},
    "agent": frozenset(),
    # A container imports the user's module, which is SDK code, and takes its settings from
    # the server's init message, never from the server's modules or the user's config.
    "_runtime": _BASE | {"sdk", "compat"},
    "_client": _BASE | {"config"},
    "sdk": _BASE | {"config", "_client"},
    "cli": _BASE | {"config", "_client", "sdk", "compat"},
    "compat": frozenset({"exception", "cli"}),  # `modal ...` forwards to the ketch CLI
}

# (importer, imported module) pairs that break MAY_IMPORT today, each to be removed.
ALLOWED_PARTS: dict[tuple[str, str], str] = {}

# (importer, "module.name") for private names imported from another part.
ALLOWED_PRIVATE: dict[tuple[str, str], str] = {}


@dataclass(frozen=True)
class Import:
    importer: str
    line: int
    module: str  # the ketch module imported, or the one a name is imported from
    name: str | None  # for `from module import name` where name is not a module

    def where(self) -> str:
        target = self.module if self.name is None else f"{self.module}.{self.name}"
        return f"{self.importer}:{self.line} imports {target}"


def _modules() -> dict[str, Path]:
    out: dict[str, Path] = {}
    for path in sorted((SRC / "ketch").rglob("*.py")):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


MODULES = _modules()


def _imports(module: str, path: Path) -> list[Import]:
    tree = ast.parse(path.read_text(), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: list[Import] = []
    for node in ast.walk(tree):  # every scope: functions and TYPE_CHECKING blocks too
        if isinstance(node, ast.Import):
            for alias in node.names:
                # A bare `import ketch` (for __version__ or the package's place) costs
                # nothing more: importing any ketch module runs ketch/__init__ first.
                if alias.name.startswith("ketch."):
                    found.append(Import(module, node.lineno, alias.name, None))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            if source != "ketch" and not source.startswith("ketch."):
                continue
            for alias in node.names:
                if f"{source}.{alias.name}" in MODULES:
                    found.append(Import(module, node.lineno, f"{source}.{alias.name}", None))
                elif not (source == "ketch" and alias.name.startswith("__")):
                    found.append(Import(module, node.lineno, source, alias.name))
    return found


def part_of(module: str) -> str:
    for prefix in sorted(PARTS, key=len, reverse=True):
        if module == prefix or (prefix != "ketch" and module.startswith(prefix + ".")):
            return PARTS[prefix]
    raise AssertionError(f"{module} is in no part: add it to PARTS in {__file__}")


ALL_IMPORTS = [imp for module, path in MODULES.items() for imp in _imports(module, path)]


def part_violations() -> list[Import]:
    out = []
    for imp in ALL_IMPORTS:
        mine, theirs = part_of(imp.importer), part_of(imp.module)
        if mine != theirs and theirs not in MAY_IMPORT[mine]:
            out.append(imp)
    return out


def private_violations() -> list[Import]:
    return [
        imp
        for imp in ALL_IMPORTS
        if imp.name is not None
        and imp.name.startswith("_")
        and not imp.name.startswith("__")
        and part_of(imp.importer) != part_of(imp.module)
    ]


def test_the_parse_sees_the_imports_it_must() -> None:
    # Guards the collector itself: a function-level, a TYPE_CHECKING and a from-package
    # import, each known to be in the tree.
    seen = {(i.importer, i.module) for i in ALL_IMPORTS}
    assert ("ketch._server.main", "ketch._server.web_service") in seen  # inside a method
    assert ("ketch._gateway.exchange", "ketch._gateway.upstream") in seen  # TYPE_CHECKING
    assert ("ketch._server.api.volumes", "ketch._server.volumes") in seen  # from pkg import mod
    assert len(MODULES) > 100


def test_every_part_has_a_rule() -> None:
    assert set(PARTS.values()) == set(MAY_IMPORT)
    for module in MODULES:
        part_of(module)


def test_parts_import_only_what_they_may() -> None:
    bad = [
        f"{imp.where()}: {part_of(imp.importer)} may not import {part_of(imp.module)}"
        for imp in part_violations()
        if (imp.importer, imp.module) not in ALLOWED_PARTS
    ]
    assert not bad, "imports across layers (see docs/architecture.md):\n" + "\n".join(bad)


def test_no_private_names_across_parts() -> None:
    bad = [
        f"{imp.where()}: a private name of another part"
        for imp in private_violations()
        if (imp.importer, f"{imp.module}.{imp.name}") not in ALLOWED_PRIVATE
    ]
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize(
    ("importer", "imported"),
    [
        ("ketch._gateway", "ketch._server"),
        ("ketch._gateway", "ketch._client"),
        ("ketch._gateway", "ketch._runtime"),
        ("ketch._gateway", "ketch.cls"),
        ("ketch._runtime", "ketch._server"),
        ("ketch._runtime", "ketch._client"),
        ("ketch._utils", "ketch._server"),
        ("ketch._utils", "ketch._gateway"),
        ("ketch._utils", "ketch.cli"),
        ("ketch._backends", "ketch._server"),
        ("ketch._server", "ketch._client"),
        ("ketch._server", "ketch.app"),
    ],
)
def test_the_table_forbids(importer: str, imported: str) -> None:
    # The rules docs/architecture.md states, pinned so that widening MAY_IMPORT is a
    # decision made here, not a side effect.
    assert part_of(imported) not in MAY_IMPORT[part_of(importer)]


def test_the_allow_lists_hold_only_live_exceptions() -> None:
    # An entry whose import is gone must go too: the lists only shrink.
    live_parts = {(i.importer, i.module) for i in part_violations()}
    live_private = {(i.importer, f"{i.module}.{i.name}") for i in private_violations()}
    assert not set(ALLOWED_PARTS) - live_parts, "stale entries in ALLOWED_PARTS"
    assert not set(ALLOWED_PRIVATE) - live_private, "stale entries in ALLOWED_PRIVATE"
