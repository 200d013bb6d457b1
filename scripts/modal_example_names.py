"""Counts the Modal names that Modal's published examples use, and what ketch does with each.

Run: .venv/bin/python scripts/modal_example_names.py PATH/TO/modal-examples [--min N]
PATH is a checkout of github.com/modal-labs/modal-examples (never vendored here). Each
`.py` file outside `internal/` is one example; a name counts once per example. Prints a
Markdown table of the names at least N examples use (default 2), each with its status in
docs/modal-parity.md, then the ones that are not `works` with the examples using them.

What is counted, read with `ast` (nothing is imported or run):
- `modal.X`, `modal.X.Y`, `modal.exception.X`, and `from modal[.exception] import X`;
- members used on values of an obvious Modal type, tracked through plain assignments,
  `with ... as`, parameter annotations and call chains: `app = modal.App()` gives
  `App.function`; `modal.Image.debian_slim().pip_install()` gives both; functions under
  `@app.function` are `Function`s (`f.remote` is `Function.remote`), classes under
  `@app.cls` are `Cls`es whose instances' methods count as `Function` members;
  `f.spawn()` is a `FunctionCall`, `Sandbox.create()` a `Sandbox`, `sb.exec()` a
  `ContainerProcess`;
- keywords of calls on those (`App.function(gpu=)`, `Image.from_registry(add_python=)`),
  which the parity doc lists only for constructors: the others are checked against
  ketch's signatures.
Scopes are Python's: a name assigned in a function is local to it; `self.x` is one
file-wide table by attribute name; `.aio` is looked through (ketch has every pair).
What it misses: values passed as unannotated arguments (`def run(model): model.f.remote()`)
or between files (`from .common import app`), items of containers (`procs[0]`,
`for sb in sbs`), returns of user functions, reassignment order within one scope (any
Modal value a name gets there wins), `getattr` and strings, and notebooks (`.ipynb`).
"""

from __future__ import annotations

import argparse
import ast
import collections
import importlib
import importlib.util
import inspect
import re
import sys
from pathlib import Path
from typing import Any, TypeGuard

import ketch
from ketch._utils.decorator_kwargs import FunctionKwargs

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "modal-parity.md"

# A value's type: ("mod", dotted module), ("cls", Name) for the class object itself,
# ("inst", Name) for an instance, ("attr", Name, member) for a member not yet called.
Value = tuple[str, ...]
BUILDS_SELF = {"from_name", "from_id", "lookup", "ephemeral", "create", "new", "from_dict"}
BUILDS_SELF |= {"from_local_environ", "from_dotenv", "with_options", "with_concurrency"}
BUILDS_SELF |= {"with_batching", "hydrate"}
RESULTS = {
    ("Function", "spawn"): "FunctionCall",
    ("Sandbox", "exec"): "ContainerProcess",
    ("Image", "imports"): None,
}
# Attributes (not methods) whose value is of a Modal type.
PROPERTIES = {
    (owner, stream): "StreamReader" if stream != "stdin" else "StreamWriter"
    for owner in ("Sandbox", "ContainerProcess")
    for stream in ("stdout", "stderr", "stdin")
}
# Classes known by their bare name wherever they are imported from (`modal.functions`).
CLASSES = {"App", "Function", "Cls", "Image", "Secret", "Volume", "Dict", "Queue"}
CLASSES |= {"FunctionCall", "Sandbox", "Retries", "Period", "Cron"}
# Sandbox's helper types: ketch has them in `ketch.sandbox`, not at the top level.
SANDBOX_TYPES = {"ContainerProcess", "StreamReader", "StreamWriter"}
CLASSES |= SANDBOX_TYPES
# Their keywords are the user function's own parameters, not Modal's.
USER_KEYWORDS = {("Function", m) for m in ("remote", "local", "spawn", "remote_gen")}
# Image's methods return a new Image; these do not.
IMAGE_NOT_CHAINED = {"imports", "object_id", "get_dashboard_url", "build", "logs"}


Scope = ast.FunctionDef | ast.AsyncFunctionDef


def _own(node: ast.AST) -> list[ast.AST]:
    """The nodes of one function's (or the module's) scope: nested defs' bodies excluded."""
    out: list[ast.AST] = []
    todo: list[ast.AST | None] = list(ast.iter_child_nodes(node))
    while todo:
        child = todo.pop()
        if child is None:
            continue
        out.append(child)
        if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
            todo += [*child.decorator_list, *child.args.defaults, *child.args.kw_defaults]
            todo += [a.annotation for a in _params(child) if a.annotation]
        else:
            todo += ast.iter_child_nodes(child)
    return out


def _params(node: Scope) -> list[ast.arg]:
    a = node.args
    return [*a.posonlyargs, *a.args, *a.kwonlyargs, *filter(None, [a.vararg, a.kwarg])]


def _is_self_attr(node: ast.expr) -> TypeGuard[ast.Attribute]:
    return isinstance(node, ast.Attribute) and getattr(node.value, "id", None) == "self"


class Example:
    def __init__(self, tree: ast.Module) -> None:
        self.names: set[str] = set()
        self.env: dict[str, Value | None] = {}
        # `self.x` values, by attribute name, for the whole file: one method sets them,
        # another uses them, so a first silent pass learns them before the counting one.
        self.attrs: dict[str, Value] = {}
        self.live = False
        self._scope(tree, {})
        self.live = True
        self._scope(tree, {})

    def add(self, name: str, record: bool) -> None:
        if record and self.live:
            self.names.add(name)

    def _scope(self, node: ast.Module | Scope, outer: dict[str, Value | None]) -> None:
        own = _own(node)
        # A name assigned anywhere in a function is local to all of it (Python's rule), so
        # a local `image = Image.open(...)` hides the module's `modal.Image`.
        self.env = dict(outer)
        for n in own:
            if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store):
                self.env[n.id] = None
        if not isinstance(node, ast.Module):
            for arg in _params(node):
                ann = self.value(arg.annotation, record=False) if arg.annotation else None
                self.env[arg.arg] = ("inst", ann[1]) if ann and ann[0] == "cls" else None
        # Types flow forwards through assignments in any order: settle before counting.
        for _ in range(3):
            self._bind(own, record=False)
        self._bind(own, record=True)
        for n in own:
            if isinstance(n, (ast.Attribute, ast.Call)):
                self.value(n, record=True)
        env = self.env
        for n in own:
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)):
                self._scope(n, env)

    def _bind(self, own: list[ast.AST], record: bool) -> None:
        for node in own:
            if isinstance(node, ast.Import):
                for a in node.names:
                    if a.name == "modal" or a.name.startswith("modal."):
                        bound = a.asname or a.name.split(".")[0]
                        self.env[bound] = ("mod", a.name if a.asname else "modal")
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                if node.module == "modal" or node.module.startswith("modal."):
                    for a in node.names:
                        self.env[a.asname or a.name] = self.member(
                            ("mod", node.module), a.name, record
                        )
            elif isinstance(node, (ast.Assign, ast.AnnAssign)):
                v = self.value(node.value, record=False) if node.value else None
                if isinstance(node, ast.AnnAssign):
                    ann = self.value(node.annotation, record=False)
                    v = ("inst", ann[1]) if ann and ann[0] == "cls" else v
                    # A dataclass field `sb: modal.Sandbox` is read as `self.sb`.
                    if isinstance(node.target, ast.Name) and v is not None:
                        self.attrs[node.target.id] = v
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                for t in targets:
                    if isinstance(t, ast.Name) and v is not None:
                        self.env[t.id] = v
                    elif _is_self_attr(t) and v is not None:
                        self.attrs[t.attr] = v
            elif isinstance(node, (ast.With, ast.AsyncWith)):
                for item in node.items:
                    v = self.value(item.context_expr, record=False)
                    if isinstance(item.optional_vars, ast.Name) and v is not None:
                        self.env[item.optional_vars.id] = v
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                self._bind_def(node)

    def _bind_def(self, node: ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) -> None:
        for dec in node.decorator_list:
            target = dec.func if isinstance(dec, ast.Call) else dec
            v = self.value(target, record=False)
            if v == ("attr", "App", "function") and not isinstance(node, ast.ClassDef):
                self.env[node.name] = ("inst", "Function")
            elif v == ("attr", "App", "cls") and isinstance(node, ast.ClassDef):
                self.env[node.name] = ("inst", "Cls")

    def member(self, base: Value, attr: str, record: bool) -> Value | None:
        kind = base[0]
        if kind == "mod":
            module = base[1]
            name = f"{module}.{attr}".removeprefix("modal").lstrip(".")
            self.add(name, record)
            if attr in CLASSES or (module == "modal" and attr[:1].isupper()):
                return ("cls", attr)
            return ("cls", name) if attr[:1].isupper() else ("mod", f"{module}.{attr}")
        if kind == "attr" and attr == "aio":
            # Every blocking method has its `.aio` twin in ketch (one async core).
            return base
        if kind in ("cls", "inst"):
            owner = base[1]
            if owner == "Obj":
                # A method of an `@app.cls` instance: Modal's bound-method Function.
                return ("inst", "Function")
            self.add(f"{owner}.{attr}", record)
            if (owner, attr) in PROPERTIES:
                return ("inst", PROPERTIES[owner, attr])
            return ("attr", owner, attr)
        return None

    def called(self, f: Value, node: ast.Call, record: bool) -> Value | None:
        if f[0] == "cls" or f == ("inst", "Cls"):
            for k in node.keywords if f[0] == "cls" else []:
                self.add(f"{f[1]}({k.arg}=)", record and k.arg is not None)
            return ("inst", "Obj") if f[1] == "Cls" else ("inst", f[1])
        if f[0] == "mod":
            # Modal's decorators and functions: `@modal.concurrent(max_inputs=)`.
            for k in node.keywords:
                self.add(f"{f[1].removeprefix('modal.')}({k.arg}=)", record and k.arg is not None)
            return None
        if f[0] != "attr":
            return None
        owner, attr = f[1], f[2]
        for k in node.keywords if (owner, attr) not in USER_KEYWORDS else []:
            self.add(f"{owner}.{attr}({k.arg}=)", record and k.arg is not None)
        if (owner, attr) in RESULTS:
            result = RESULTS[owner, attr]
            return None if result is None else ("inst", result)
        if owner == "Image" and attr not in IMAGE_NOT_CHAINED:
            return ("inst", "Image")
        if attr in BUILDS_SELF:
            return ("inst", owner)
        return None

    def value(self, node: ast.expr, record: bool) -> Value | None:
        if isinstance(node, ast.Name):
            return self.env.get(node.id)
        if isinstance(node, ast.Attribute):
            if _is_self_attr(node) and node.attr in self.attrs:
                return self.attrs[node.attr]
            base = self.value(node.value, record)
            return None if base is None else self.member(base, node.attr, record)
        if isinstance(node, ast.Call):
            f = self.value(node.func, record)
            return None if f is None else self.called(f, node, record)
        if isinstance(node, ast.Await):
            return self.value(node.value, record)
        return None


def parity_statuses(doc: Path) -> dict[str, str]:
    """Reads the parity doc's tables into {"App.function": "works", "Sandbox": ...}."""
    statuses: dict[str, str] = {}
    section = ""
    for line in doc.read_text().splitlines():
        if line.startswith("## "):
            heading = re.findall(r"`([^`]+)`", line)
            section = "" if line.startswith("## Top level") else heading[0] if heading else ""
            section = "exception" if section == "modal.exception" else section
        m = re.match(r"\| `([^`]+)` \| ([a-z ]+) \|", line)
        if m:
            name, status = m.groups()
            joiner = "" if name.startswith("(") else "."
            statuses[f"{section}{joiner}{name}" if section else name] = status
    return statuses


def _ketch_object(owner: str) -> Any:
    if owner == "exception":
        return ketch.exception
    if owner in SANDBOX_TYPES:
        return getattr(importlib.import_module("ketch.sandbox"), owner, None)
    found = getattr(ketch, owner, None)
    if found is None and importlib.util.find_spec(f"ketch.{owner}") is not None:
        found = importlib.import_module(f"ketch.{owner}")  # `import modal.<owner>` works too
    return found


def ketch_status(name: str) -> str:
    """For a name the parity doc does not list: whether ketch has it (or accepts the keyword)."""
    m = re.fullmatch(r"(\w+)(?:\.(\w+))?(?:\((\w+)=\))?", name)
    if m is None:
        return "unlisted"
    owner, attr, keyword = m.groups()
    obj = _ketch_object(owner) if attr or keyword else None
    if obj is None and not (attr or keyword):
        return "unlisted; ketch has it" if hasattr(ketch, owner) else "unlisted; ketch lacks it"
    if obj is None:
        return f"unlisted; ketch lacks {owner}"
    if attr is not None:
        if not hasattr(obj, attr):
            return "unlisted; ketch lacks it"
        obj = getattr(obj, attr)
    if keyword is None:
        return "unlisted; ketch has it"
    # ketch's sync/`.aio` pairs keep the coroutine they were made from.
    obj = getattr(obj, "_afn", None) or getattr(obj, "_agen_fn", None) or obj
    try:
        params = inspect.signature(obj).parameters
    except (TypeError, ValueError):
        return "keyword; signature unknown"
    if keyword in params:
        return "keyword accepted"
    extra = [p for p in params.values() if p.kind is inspect.Parameter.VAR_KEYWORD]
    if extra and "FunctionKwargs" in str(extra[0].annotation):
        accepted = keyword in FunctionKwargs.__annotations__
        return "keyword accepted" if accepted else "keyword not accepted"
    return "keyword accepted (**kwargs)" if extra else "keyword not accepted"


def examples(root: Path) -> dict[str, set[str]]:
    used: dict[str, set[str]] = {}
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root).as_posix()
        if rel.startswith(("internal/", ".")):
            continue
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError) as exc:
            print(f"skipped {rel}: {exc}", file=sys.stderr)
            continue
        names = Example(tree).names
        if names:
            used[rel] = names
    return used


def _fine(status: str) -> bool:
    return status.endswith("ketch has it") or status.startswith("keyword accepted")


def report(used: dict[str, set[str]], statuses: dict[str, str], minimum: int) -> str:
    counts = collections.Counter(n for names in used.values() for n in names)
    common = sorted((n for n, c in counts.items() if c >= minimum), key=lambda n: (-counts[n], n))
    status = {n: statuses.get(n) or ketch_status(n) for n in common}
    lines = [
        f"{len(used)} examples use Modal; {len(common)} names are used by >= {minimum}.",
        "",
        "| name | examples | status |",
        "| --- | ---: | --- |",
    ]
    lines += [f"| `{n}` | {counts[n]} | {status[n]} |" for n in common]
    doc_gaps = [n for n in common if n in statuses and statuses[n] != "works"]
    other_gaps = [n for n in common if n not in statuses and not _fine(status[n])]
    for title, gaps in (
        ("Not `works` in docs/modal-parity.md", doc_gaps),
        ("Not in docs/modal-parity.md, and ketch lacks them", other_gaps),
    ):
        lines += ["", f"## {title} ({len(gaps)})", ""]
        for n in gaps:
            where = sorted(rel for rel, names in used.items() if n in names)
            lines.append(f"- `{n}` ({counts[n]}, {status[n]}): {', '.join(where)}")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("examples", type=Path, help="a checkout of modal-labs/modal-examples")
    parser.add_argument("--min", type=int, default=2, help="least number of examples (2)")
    args = parser.parse_args(argv)
    print(report(examples(args.examples), parity_statuses(DOC), args.min))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
