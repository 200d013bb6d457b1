"""Writes docs/modal-parity.md: each public name of Modal's SDK and what ketch does with it.

Run: .venv/bin/python scripts/modal_parity.py [--check]
The Modal side is read with `ast` from the pinned `modal` wheel (downloaded once into
KETCH_MODAL_PARITY_CACHE, default ~/.cache/ketch-modal-parity), never installed or
imported: ketch's environment must not gain a real `modal`, which would turn the
`import modal` alias off. The ketch side is the installed package, looked up by name. A
name ketch lacks needs an entry in REASONS; `--check` exits 1 when the docs are stale.
"""

from __future__ import annotations

import ast
import collections
import dataclasses
import importlib
import importlib.util
import inspect
import os
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "modal-parity.md"
MODAL_VERSION = "1.6.4"
WHEEL = f"modal-{MODAL_VERSION}-py3-none-any.whl"
OBJECTS = (
    "App",
    "Function",
    "Cls",
    "Image",
    "Secret",
    "Volume",
    "Dict",
    "Queue",
    "FunctionCall",
    "Sandbox",
    "Retries",
    "Period",
    "Cron",
)
# Objects users build themselves: their constructor's keywords are part of the surface.
CONSTRUCTED = {"App", "Retries", "Period", "Cron"}

WORKS, REFUSED, NOT_APPLICABLE, NOT_YET = "works", "refused", "not applicable", "not yet"
STATUSES = (WORKS, REFUSED, NOT_APPLICABLE, NOT_YET)

CLOUD = "Modal-cloud-only"
SANDBOX = "issue 15: Sandboxes"

IMAGE = "issue 15: image helpers"
EVERYDAY = "issue 15: the rest of the everyday API"
WIRE = "issue 17: Modal's own client (the wire front end)"
NO_ISSUE = "no issue yet"
CLIENT = (
    NOT_APPLICABLE,
    "Modal's `_Client` connection object; ketch's client is per process, set by KETCH_* settings",
)
DASHBOARD = (NOT_YET, f"ketch has a dashboard (`ketch dashboard`), no URL helper; {NO_ISSUE}")
INFO = (NOT_YET, f"`ketch app status` and the management API show it; {NO_ISSUE}")
HYDRATE = (NOT_YET, f"ketch's handles resolve lazily on first use; {NO_ISSUE}")
OBJECT_ID = (NOT_YET, f"ketch identifies these by name; {NO_ISSUE}")
FROM_ID = (NOT_YET, f"ketch looks these up by name; {NO_ISSUE}")
OBJ_LOGS = (NOT_YET, f"`ketch app logs` in the CLI; no SDK accessor; {NO_ISSUE}")
PROTO = (NOT_APPLICABLE, "the protobuf message Modal's client sends; ketch has no protobuf")

# Keys: "Name" (top level, and every member of an object ketch lacks), "Object.member",
# "Object(param=)" (a constructor keyword), "exception.Name". Values: (status, note); a
# `works` entry only adds a note. For `refused`, the note quotes ketch's message between
# double quotes, and that text must appear in ketch's source.
REASONS: dict[str, tuple[str, str]] = {
    # --- top level ---
    "Client": CLIENT,
    "Cluster": (NOT_APPLICABLE, f"{CLOUD}: multi-node clusters (`@clustered`)"),
    "clustered": (NOT_APPLICABLE, f"{CLOUD}: multi-node gang scheduling (RDMA between nodes)"),
    "Environment": (NOT_YET, f"environments exist as `environment_name=` strings; {NO_ISSUE}"),
    "Error": (NOT_YET, f"`ketch.exception.Error` exists, not re-exported at top level; {EVERYDAY}"),
    "FilePatternMatcher": (NOT_YET, f"`ignore=` takes lists of globs; {NO_ISSUE}"),
    "NetworkFileSystem": (NOT_APPLICABLE, f"{CLOUD} (deprecated there); use `Volume`"),
    "CloudBucketMount": (NOT_APPLICABLE, f"{CLOUD}: S3/GCS/R2 mounts; use `Volume`"),
    "Probe": (NOT_YET, f"sandbox readiness probes; {NO_ISSUE}"),
    "Proxy": (NOT_APPLICABLE, f"{CLOUD}: static outbound IP addresses"),
    "SandboxSnapshot": (NOT_YET, f"sandbox filesystem snapshots; {NO_ISSUE}"),
    "SchedulerPlacement": (NOT_APPLICABLE, f"{CLOUD}: regions and zones"),
    "Server": (NOT_YET, f"`@app.server` long-lived HTTP servers (new in 1.6); {NO_ISSUE}"),
    "Workspace": (NOT_APPLICABLE, f"{CLOUD}: workspaces and their members"),
    "billing": (NOT_APPLICABLE, f"{CLOUD}: billing reports"),
    "experimental": (
        WORKS,
        "only `http_server` (a class's own HTTP server, its URL from "
        "`Cls._experimental_get_flash_urls()`; regions, `exit_grace_period` and `h2_enabled` "
        "ignored); Modal's other unstable APIs are not ported",
    ),
    "interact": (WORKS, 'locally; in a container it raises "is not available inside a container"'),
    "sessioned": (NOT_YET, f"session-affine inputs (new in 1.6); {NO_ISSUE}"),
    "types": (NOT_APPLICABLE, "typing helpers of Modal's client (AppInfo, AppStats, ...)"),
    # --- App ---
    "App.description": (NOT_YET, f"the app's name or a fallback; {NO_ISSUE}"),
    "App.get_dashboard_url": DASHBOARD,
    "App.get_tags": (NOT_YET, f"`App(tags=)` is accepted; reading them back: {NO_ISSUE}"),
    "App.set_tags": (NOT_YET, f"`App(tags=)` is accepted; changing them live: {NO_ISSUE}"),
    "App.info": INFO,
    "App.logs": OBJ_LOGS,
    "App.registered_web_endpoints": (NOT_YET, f"`registered_functions` has them; {NO_ISSUE}"),
    "App.sandboxes": (NOT_YET, SANDBOX),
    "App.server": (NOT_YET, f"`@app.server` (new in 1.6); {NO_ISSUE}"),
    "App.stats": (NOT_YET, f"`ketch app status` and the metrics endpoint show it; {NO_ISSUE}"),
    "App.stop": (NOT_YET, f"`ketch app stop` in the CLI; no SDK method; {NO_ISSUE}"),
    # --- Sandbox ---
    "Sandbox.client": CLIENT,
    "Sandbox.create_connect_token": (NOT_YET, f"tokens for a sandbox's HTTP server; {NO_ISSUE}"),
    "Sandbox.get_dashboard_url": DASHBOARD,
    "Sandbox.logs": (NOT_YET, f"`ketch sandbox logs` in the CLI; no SDK accessor; {NO_ISSUE}"),
    "Sandbox.mount_image": (NOT_YET, f"images mounted into a running sandbox; {NO_ISSUE}"),
    "Sandbox.unmount_image": (NOT_YET, f"images mounted into a running sandbox; {NO_ISSUE}"),
    "Sandbox.snapshot_directory": (NOT_YET, f"sandbox filesystem snapshots; {NO_ISSUE}"),
    "Sandbox.snapshot_filesystem": (NOT_YET, f"sandbox filesystem snapshots; {NO_ISSUE}"),
    "Sandbox.wait_until_ready": (NOT_YET, f"needs readiness probes (`Probe`); {NO_ISSUE}"),
    # --- Function ---
    "Function.app": (NOT_YET, f"hidden in Modal's docs; {NO_ISSUE}"),
    "Function.autoscaler": (NOT_YET, f"autoscaler namespace (new in 1.6); {EVERYDAY}"),
    "Function.client": CLIENT,
    "Function.experimental_spawn_map": (NOT_APPLICABLE, "experimental in Modal; use `spawn_map`"),
    "Function.from_id": FROM_ID,
    "Function.get_dashboard_url": DASHBOARD,
    "Function.info": INFO,
    "Function.logs": OBJ_LOGS,
    "Function.metrics": (NOT_YET, f"ketch's metrics are a Prometheus endpoint; {NO_ISSUE}"),
    "Function.stats": (NOT_YET, f"`ketch app status` and the metrics endpoint; {NO_ISSUE}"),
    # --- Cls ---
    "Cls.client": CLIENT,
    "Cls.get_dashboard_url": DASHBOARD,
    "Cls.object_id": OBJECT_ID,
    # --- Image ---
    "Image.build": (NOT_YET, f"images build on deploy/run; eager `build(app)`: {NO_ISSUE}"),
    "Image.client": CLIENT,
    "Image.force_build": (NOT_YET, f"`ketch deploy --force-build` does it; {NO_ISSUE}"),
    "Image.from_aws_ecr": (
        NOT_YET,
        f"`from_registry(secret=)` covers plain registries; {NO_ISSUE}",
    ),
    "Image.from_gcp_artifact_registry": (
        NOT_YET,
        f"`from_registry(secret=)` covers plain registries; {NO_ISSUE}",
    ),
    "Image.from_id": FROM_ID,
    "Image.from_name": (NOT_YET, f"named, published images (with `publish`); {NO_ISSUE}"),
    "Image.from_registry": (
        WORKS,
        'pulls with skopeo and umoci on the server host; without them "Image.from_registry '
        'needs skopeo and umoci"',
    ),
    "Image.from_scratch": (NOT_YET, f"an empty root filesystem; {NO_ISSUE}"),
    "Image.get_dashboard_url": DASHBOARD,
    "Image.hydrate": HYDRATE,
    "Image.inside_exceptions": (NOT_APPLICABLE, "internal state of Modal's `imports()`"),
    "Image.logs": OBJ_LOGS,
    "Image.micromamba": (
        WORKS,
        "Python from conda-forge into /opt/conda, solved and installed with rattler",
    ),
    "Image.micromamba_install": (
        WORKS,
        "channels default to conda-forge; the server may mirror them (KETCH_CONDA_MIRRORS)",
    ),
    "Image.object_id": OBJECT_ID,
    "Image.pip_install_private_repos": (NOT_YET, f"needs build-time secrets; {NO_ISSUE}"),
    "Image.pipe": (NOT_YET, f"`image.pipe(fn)` recipe composition (new in 1.6); {NO_ISSUE}"),
    "Image.poetry_install_from_file": (NOT_YET, f"use `pip_install_from_pyproject`; {NO_ISSUE}"),
    "Image.publish": (NOT_YET, f"named, published images (with `from_name`); {NO_ISSUE}"),
    "Image.run_commands": (
        WORKS,
        "with `gpu=` the step holds matching GPUs of the server's host while it runs",
    ),
    "Image.shell": (NOT_YET, f"Dockerfile `SHELL` for later steps; {NO_ISSUE}"),
    # --- Secret ---
    "Secret.client": CLIENT,
    "Secret.get_dashboard_url": DASHBOARD,
    "Secret.hydrate": HYDRATE,
    "Secret.info": INFO,
    "Secret.name": (NOT_YET, f"{NO_ISSUE}"),
    "Secret.object_id": OBJECT_ID,
    "Secret.objects": (NOT_YET, f"`ketch secret list/create/delete` in the CLI; {NO_ISSUE}"),
    "Secret.update": (NOT_YET, f"`ketch secret create --force` replaces a secret; {NO_ISSUE}"),
    # --- Volume ---
    "Volume.client": CLIENT,
    "Volume.from_id": FROM_ID,
    "Volume.get_dashboard_url": DASHBOARD,
    "Volume.info": INFO,
    "Volume.objects": (NOT_YET, f"`ketch volume` in the CLI; {NO_ISSUE}"),
    "Volume.read_only": (NOT_YET, f"read-only mounts; {NO_ISSUE}"),
    "Volume.rename": (NOT_YET, f"{NO_ISSUE}"),
    "Volume.with_mount_options": (NOT_YET, f"read-only mounts; {NO_ISSUE}"),
    # --- Dict / Queue ---
    "Dict.client": CLIENT,
    "Dict.from_id": FROM_ID,
    "Dict.get_dashboard_url": DASHBOARD,
    "Dict.info": INFO,
    "Queue.client": CLIENT,
    "Queue.from_id": FROM_ID,
    "Queue.get_dashboard_url": DASHBOARD,
    "Queue.info": INFO,
    "Queue.validate_partition_key": (NOT_YET, f"undocumented helper of Modal's; {NO_ISSUE}"),
    # --- FunctionCall ---
    "FunctionCall.client": CLIENT,
    "FunctionCall.get_call_graph": (NOT_YET, f"`ketch call` records each call; {NO_ISSUE}"),
    "FunctionCall.get_dashboard_url": DASHBOARD,
    "FunctionCall.hydrate": HYDRATE,
    "FunctionCall.iter": (NOT_YET, f"results of a `spawn_map` call, in order; {NO_ISSUE}"),
    "FunctionCall.logs": OBJ_LOGS,
    "FunctionCall.num_inputs": (NOT_YET, f"{NO_ISSUE}"),
    # --- Period / Cron ---
    "Period.proto_message": PROTO,
    "Cron.proto_message": PROTO,
    # --- exception ---
    "exception.AsyncUsageWarning": (
        NOT_YET,
        f"ketch does not detect blocking calls in async code; {NO_ISSUE}",
    ),
    "exception.ConflictError": (NOT_YET, f"a gRPC status error; {WIRE}"),
    "exception.DataLossError": (NOT_YET, f"a gRPC status error; {WIRE}"),
    "exception.DeprecationError": (WORKS, "an `Error` in ketch; a `UserWarning` in Modal"),
    "exception.ImageBuildError": (
        NOT_YET,
        f"ketch raises its own ImageBuildError, not exported from `ketch.exception`; {NO_ISSUE}",
    ),
    "exception.InteractiveTimeoutError": (
        NOT_APPLICABLE,
        "interactive container sessions (`modal.interact`) over Modal's cloud",
    ),
    "exception.InternalAPIWarning": (NOT_APPLICABLE, "warns about Modal's internal APIs"),
    "exception.InternalError": (NOT_YET, f"a gRPC status error; {WIRE}"),
    "exception.LogsFetchError": (NOT_YET, f"with the SDK `logs` accessors; {NO_ISSUE}"),
    "exception.ModuleNotMountable": (
        NOT_APPLICABLE,
        "Modal's automounting of local packages; ketch ships the app's source",
    ),
    "exception.MountUploadTimeoutError": (NOT_APPLICABLE, "uploads to Modal's cloud"),
    "exception.PermissionDeniedError": (NOT_YET, f"a gRPC status error; {WIRE}"),
    "exception.ServerWarning": (NOT_APPLICABLE, "warnings Modal's server sends its client"),
    "exception.ServiceError": (NOT_YET, f"a gRPC status error; {WIRE}"),
    "exception.SnapshotCreationError": (NOT_YET, f"sandbox snapshots; {SANDBOX}"),
    "exception.UnimplementedError": (NOT_YET, f"a gRPC status error; {WIRE}"),
    "exception.UserCodeException": (
        NOT_APPLICABLE,
        "deprecated in Modal (a synchronicity wrapper type)",
    ),
    "exception.VolumeUploadTimeoutError": (
        NOT_APPLICABLE,
        "uploads to Modal's cloud; ketch volumes are local",
    ),
    "exception.WorkspaceManagementError": (NOT_APPLICABLE, f"{CLOUD}: workspaces"),
    "exception.simulate_preemption": (NOT_YET, f"ketch does not preempt containers; {NO_ISSUE}"),
}


# ----------------------------------------------------------------------------- Modal side


def wheel_path(
    cache: Path | None = None, *, download: bool = True, timeout: float = 300
) -> Path | None:
    """The cached wheel, downloaded with pip when absent (None if neither works)."""
    cache = cache or Path(
        os.environ.get("KETCH_MODAL_PARITY_CACHE", Path.home() / ".cache" / "ketch-modal-parity")
    )
    path = cache / WHEEL
    if path.exists() or not download:
        return path if path.exists() else None
    cache.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", f"modal=={MODAL_VERSION}", "--no-deps"]
    cmd += ["-d", str(cache), "--quiet", "--disable-pip-version-check"]
    try:
        subprocess.run(cmd, check=True, capture_output=True, timeout=timeout)
    except (OSError, subprocess.SubprocessError):
        return None
    return path if path.exists() else None


@dataclasses.dataclass(frozen=True)
class Member:
    name: str
    kind: str  # method, property, classmethod, staticmethod, attribute, parameter


class ModalSource:
    """The `modal` package's modules, parsed, with just enough name resolution to follow
    `from .x import Y` and `Y = synchronize_api(_Y)` to the class that defines `Y`."""

    def __init__(self, wheel: Path) -> None:
        self.modules: dict[str, ast.Module] = {}
        self.packages: set[str] = set()
        with zipfile.ZipFile(wheel) as zf:
            for entry in zf.namelist():
                if not entry.startswith("modal/") or not entry.endswith(".py"):
                    continue
                dotted = entry[: -len(".py")].replace("/", ".")
                if dotted.endswith(".__init__"):
                    dotted = dotted[: -len(".__init__")]
                    self.packages.add(dotted)
                self.modules[dotted] = ast.parse(zf.read(entry), filename=entry)

    def _absolute(self, module: str, node: ast.ImportFrom) -> str:
        if not node.level:
            return node.module or ""
        base = module.split(".")
        if module not in self.packages:
            base = base[:-1]
        base = base[: len(base) - (node.level - 1)]
        return ".".join(base + ([node.module] if node.module else []))

    def resolve(self, module: str, name: str, depth: int = 0) -> tuple[str, ast.AST] | None:
        """(module, ClassDef) for a class, ("<module>", Module) for a module, or None."""
        if depth > 20 or module not in self.modules:
            return None
        for node in _flat(self.modules[module].body):
            if isinstance(node, ast.ClassDef) and node.name == name:
                return module, node
            if isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == name for t in node.targets
            ):
                value = node.value
                if isinstance(value, ast.Call) and value.args:
                    value = value.args[0]  # synchronize_api(_X, ...)
                return self.resolve_expr(module, value, depth + 1)
            if isinstance(node, ast.ImportFrom):
                for alias in node.names:
                    if (alias.asname or alias.name) != name:
                        continue
                    source = self._absolute(module, node)
                    submodule = f"{source}.{alias.name}"
                    if submodule in self.modules:
                        return submodule, self.modules[submodule]
                    return self.resolve(source, alias.name, depth + 1)
        return None

    def resolve_expr(self, module: str, expr: ast.expr, depth: int) -> tuple[str, ast.AST] | None:
        if isinstance(expr, ast.Name):
            return self.resolve(module, expr.id, depth)
        if isinstance(expr, ast.Attribute):
            owner = self.resolve_expr(module, expr.value, depth + 1)
            if owner is not None and isinstance(owner[1], ast.Module):
                return self.resolve(owner[0], expr.attr, depth + 1)
        return None

    def top_level(self) -> list[str]:
        for node in self.modules["modal"].body:
            if isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets
            ):
                return sorted(ast.literal_eval(node.value))
        raise LookupError("modal/__init__.py has no __all__")

    def members(self, name: str) -> list[Member]:
        found = self.resolve("modal", name)
        if found is None or not isinstance(found[1], ast.ClassDef):
            raise LookupError(f"cannot find the class behind modal.{name}")
        seen: dict[str, Member] = {}
        self._collect(found[0], found[1], seen, constructor=name in CONSTRUCTED)
        return sorted(seen.values(), key=lambda m: m.name)

    def _collect(
        self, module: str, cls: ast.ClassDef, seen: dict[str, Member], *, constructor: bool
    ) -> None:
        for node in cls.body:
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                if node.name == "__init__":
                    self._init_members(node, seen, constructor=constructor)
                elif not node.name.startswith("_"):
                    seen.setdefault(node.name, Member(node.name, _kind(node)))
            for target in _assigned(node):
                if not target.startswith("_"):
                    seen.setdefault(target, Member(target, "attribute"))
        # Only the most derived `__init__` gives the constructor's keywords.
        own_init = any(isinstance(n, ast.FunctionDef) and n.name == "__init__" for n in cls.body)
        for base in cls.bases:
            # Subclasses first: an override keeps the subclass's kind.
            found = self.resolve_expr(module, base, 0)
            if found is not None and isinstance(found[1], ast.ClassDef):
                self._collect(found[0], found[1], seen, constructor=constructor and not own_init)

    @staticmethod
    def _init_members(
        node: ast.FunctionDef | ast.AsyncFunctionDef, seen: dict[str, Member], *, constructor: bool
    ) -> None:
        if constructor:
            params = node.args.posonlyargs + node.args.args + node.args.kwonlyargs
            for arg in params[1:]:
                if not arg.arg.startswith("_"):
                    key = f"({arg.arg}=)"
                    seen.setdefault(key, Member(key, "parameter"))
        for sub in ast.walk(node):
            targets = sub.targets if isinstance(sub, ast.Assign) else []
            if isinstance(sub, ast.AnnAssign):
                targets = [sub.target]
            for t in targets:
                if (
                    isinstance(t, ast.Attribute)
                    and isinstance(t.value, ast.Name)
                    and t.value.id == "self"
                    and not t.attr.startswith("_")
                ):
                    seen.setdefault(t.attr, Member(t.attr, "attribute"))

    def exception_names(self) -> list[str]:
        names = set()
        for node in self.modules["modal.exception"].body:
            if isinstance(node, ast.ClassDef | ast.FunctionDef):
                names.add(node.name)
            names.update(_assigned(node))
        return sorted(n for n in names if not n.startswith("_"))


def _flat(body: list[ast.stmt]) -> list[ast.stmt]:
    """Statements, with those inside `try:` and `if` blocks (`modal/__init__.py` imports
    everything inside a `try:`)."""
    out: list[ast.stmt] = []
    for node in body:
        if isinstance(node, ast.Try):
            out += _flat(node.body + node.orelse + node.finalbody)
        elif isinstance(node, ast.If):
            out += _flat(node.body + node.orelse)
        else:
            out.append(node)
    return out


def _kind(node: ast.FunctionDef | ast.AsyncFunctionDef) -> str:
    for deco in node.decorator_list:
        name = deco.id if isinstance(deco, ast.Name) else getattr(deco, "attr", "")
        if name in ("property", "classmethod", "staticmethod"):
            return name
        if name in ("setter", "deleter"):
            return "property"
    return "method"


def _assigned(node: ast.stmt) -> list[str]:
    if isinstance(node, ast.Assign):
        return [t.id for t in node.targets if isinstance(t, ast.Name)]
    if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
        return [node.target.id]
    return []


# ----------------------------------------------------------------------------- ketch side


def _instance_attributes(cls: type) -> set[str]:
    """Attributes ketch's classes set on `self` (absent from the class itself)."""
    names: set[str] = set()
    for klass in cls.__mro__:
        if not klass.__module__.startswith("ketch"):
            continue
        names.update(getattr(klass, "__annotations__", {}))
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        except (OSError, TypeError, SyntaxError):
            continue
        for sub in ast.walk(tree):
            if (
                isinstance(sub, ast.Attribute)
                and isinstance(sub.ctx, ast.Store)
                and isinstance(sub.value, ast.Name)
                and sub.value.id == "self"
            ):
                names.add(sub.attr)
    return names


def ketch_top_level(name: str) -> bool:
    import ketch

    if hasattr(ketch, name):
        return True
    # `import modal.<name>` resolves to `ketch.<name>` through the alias.
    return importlib.util.find_spec(f"ketch.{name}") is not None


def ketch_member(obj: str, member: Member) -> bool:
    import ketch

    cls = getattr(ketch, obj, None)
    if not isinstance(cls, type):
        return False
    if member.kind == "parameter":
        keyword = member.name[1:-2]
        try:
            params = inspect.signature(cls).parameters
        except (TypeError, ValueError):
            return False
        return keyword in params
    return hasattr(cls, member.name) or member.name in _instance_attributes(cls)


def ketch_exception(name: str) -> bool:
    return hasattr(importlib.import_module("ketch.exception"), name)


# ----------------------------------------------------------------------------- comparison


@dataclasses.dataclass(frozen=True)
class Row:
    section: str  # "modal", an object name, or "exception"
    key: str  # the REASONS key
    name: str  # as shown in its table
    present: bool
    status: str
    note: str


def compare(src: ModalSource) -> tuple[list[Row], list[str]]:
    """Every Modal name with its status, and the problems the test fails on."""
    rows: list[Row] = []
    problems: list[str] = []
    used: set[str] = set()

    def add(section: str, key: str, name: str, present: bool, fallback: str | None = None) -> None:
        reason_key = key if key in REASONS or fallback is None else fallback
        reason = REASONS.get(reason_key)
        if reason is not None:
            used.add(reason_key)
        if present:
            status, note = reason if reason is not None else (WORKS, "")
            if status not in (WORKS, REFUSED):
                problems.append(
                    f"stale: REASONS[{key!r}] says {status!r} but ketch has it; "
                    "drop the entry or make it 'refused'"
                )
                status, note = WORKS, ""
        elif reason is None:
            problems.append(f"unaccounted: modal {key} is missing from ketch and from REASONS")
            status, note = NOT_YET, "(no reason given)"
        else:
            status, note = reason
            if status in (WORKS, REFUSED):
                problems.append(f"stale: REASONS[{key!r}] says {status!r} but ketch lacks it")
        rows.append(Row(section, key, name, present, status, note))

    for name in src.top_level():
        add("modal", name, name, ketch_top_level(name))
    for obj in OBJECTS:
        obj_present = ketch_member_owner(obj)
        for member in src.members(obj):
            sep = "" if member.kind == "parameter" else "."
            key = f"{obj}{sep}{member.name}"
            present = obj_present and ketch_member(obj, member)
            add(obj, key, member.name, present, fallback=None if obj_present else obj)
    for name in src.exception_names():
        add("exception", f"exception.{name}", name, ketch_exception(name))

    for key in sorted(set(REASONS) - used):
        problems.append(f"stale: REASONS[{key!r}] names nothing Modal {MODAL_VERSION} has")
    ketch_source = "\n".join(
        p.read_text() for p in (ROOT / "src" / "ketch").rglob("*.py") if p.is_file()
    )
    for key, (status, note) in sorted(REASONS.items()):
        if status not in STATUSES:
            problems.append(f"REASONS[{key!r}]: unknown status {status!r}")
        if status == REFUSED and _quoted(note) not in ketch_source:
            problems.append(f"REASONS[{key!r}]: the quoted message is not in ketch's source")
    return rows, problems


def ketch_member_owner(obj: str) -> bool:
    import ketch

    return isinstance(getattr(ketch, obj, None), type)


def _quoted(note: str) -> str:
    """The text between the first pair of double quotes of a `refused` note."""
    parts = note.split('"')
    return parts[1] if len(parts) >= 3 else note


TITLES = {"modal": "Top level (`modal.__all__`)", "exception": "`modal.exception`"}


def render(rows: list[Row]) -> str:
    counts = collections.Counter(r.status for r in rows)
    out = [
        "# Modal parity",
        "",
        "<!-- generated by scripts/modal_parity.py; do not edit by hand -->",
        "",
        f"Every public name of Modal's SDK (`modal` {MODAL_VERSION}, read from its wheel "
        "without installing it) and what ketch does with it. Generated: run "
        "`.venv/bin/python scripts/modal_parity.py`; `tests/unit/test_modal_parity.py` "
        "fails when a Modal name is unaccounted for, when a reason is stale, or when this "
        "file is out of date.",
        "",
        "Names are the top-level `__all__`, the public members of "
        + ", ".join(f"`{o}`" for o in OBJECTS)
        + " (inherited ones included; `(x=)` is a constructor keyword), and "
        "`modal.exception`. `works`: ketch has the name under Modal's spelling (with "
        "`import modal` resolving to ketch). Members of an object ketch lacks take that "
        "object's status.",
        "",
        "| status | names |",
        "| --- | ---: |",
    ]
    out += [f"| {s} | {counts.get(s, 0)} |" for s in STATUSES]
    out.append(f"| total | {len(rows)} |")
    sections = ["modal", *OBJECTS, "exception"]
    for section in sections:
        out += ["", f"## {TITLES.get(section, f'`{section}`')}", ""]
        out += ["| name | status | note |", "| --- | --- | --- |"]
        for r in sorted((r for r in rows if r.section == section), key=lambda r: r.name):
            note = r.note.replace("|", "\\|")
            out.append(f"| `{r.name}` | {r.status} | {note} |")
    return "\n".join(out) + "\n"


def build(wheel: Path) -> tuple[str, list[str]]:
    rows, problems = compare(ModalSource(wheel))
    return render(rows), problems


def main(argv: list[str]) -> int:
    wheel = wheel_path()
    if wheel is None:
        print(f"modal_parity: cannot download or find {WHEEL}", file=sys.stderr)
        return 2
    text, problems = build(wheel)
    for p in problems:
        print(p, file=sys.stderr)
    if "--check" in argv:
        current = DOC.read_text() if DOC.exists() else ""
        if current != text:
            print(f"{DOC.relative_to(ROOT)} is out of date; run scripts/modal_parity.py")
            return 1
        return 1 if problems else 0
    DOC.write_text(text)
    print(f"wrote {DOC.relative_to(ROOT)}")
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
