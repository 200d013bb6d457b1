"""Deploying, stopping and looking up apps: validation, secrets, image builds, persistence."""

from __future__ import annotations

import asyncio
import base64
import compileall
import contextlib
import hashlib
import json
import re
import shutil
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from ketch._server import autoscaler_overrides
from ketch._server.api_models import DeployIn, StoredApp, validation_message
from ketch._server.crypto import SecretBox
from ketch._server.images import ImageBuilder, mount_files
from ketch._server.model import FunctionDef
from ketch._server.scheduler import Scheduler
from ketch._server.store import Store
from ketch._server.volumes import VolumeManager
from ketch._utils.ids import new_id, stable_id
from ketch._utils.protocol.spec import InlineSecret, NamedSecret, SealedSecret, StoredNamedSecret
from ketch.exception import AlreadyExistsError, InvalidError, NotFoundError
from ketch.image import hash_build_spec

if TYPE_CHECKING:
    from ketch._server.logs import LogHub
    from ketch._server.web_service import WebService

_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9._-]{0,63}$")

Log = Callable[[str], None]


def validate_name(kind: str, name: str) -> None:
    if not isinstance(name, str) or not _NAME.match(name):
        raise InvalidError(
            f"invalid {kind} name {name!r}: use letters, digits, '.', '_' or '-' "
            "(at most 64, starting with a letter or digit)"
        )


def decode_stored(text: str) -> StoredApp:
    """A stored app version, checked as it was when it was written (a version edited or
    damaged in the store since is refused here, not deep inside the scheduler)."""
    try:
        return StoredApp.model_validate_json(text)
    except ValidationError as exc:
        raise InvalidError(f"stored version is invalid: {validation_message(exc)}") from None


def load_stored(text: str) -> dict[str, Any]:
    """A stored app version as JSON data, checked by `decode_stored`."""
    return decode_stored(text).model_dump(mode="json", by_alias=True, exclude_unset=True)


@dataclass
class _Prepared:
    """A deploy whose request checks passed: what is left is building and going live."""

    spec: DeployIn
    functions: dict[str, dict[str, Any]]
    source_dir: str | None


class AppManager:
    def __init__(
        self,
        home: Path,
        store: Store,
        scheduler: Scheduler,
        builder: ImageBuilder,
        box: SecretBox,
        *,
        web: WebService | None = None,
        workspace: str = "local",
        on_note: Callable[[str, str], None] | None = None,
        logs: LogHub | None = None,
    ) -> None:
        self.web = web
        self.logs = logs
        self.workspace = workspace
        self.on_note = on_note
        self._tasks: set[asyncio.Task[None]] = set()
        self.home = home
        self.store = store
        self.scheduler = scheduler
        self.builder = builder
        self.box = box
        self.apps: dict[str, dict[str, Any]] = {}  # app_id -> {name, environment, state, ...}
        # Deployed apps that could not come back on start: app_id -> {name, environment,
        # error}. They stay recorded as deployed; a redeploy (or a stop) clears them.
        self.broken: dict[str, dict[str, str]] = {}
        self.volumes = VolumeManager(home, store)

    # -- blobs --------------------------------------------------------------------------
    def blob_path(self, sha: str) -> Path:
        if not re.fullmatch(r"[0-9a-f]{64}", sha):
            raise InvalidError("blob ids are sha256 hex digests")
        return self.home / "blobs" / sha

    def _source_dir(self, sha: str) -> Path:
        dest = self.home / "sources" / sha
        if (dest / ".ok").exists():
            return dest
        blob = self.blob_path(sha)
        if not blob.exists():
            raise NotFoundError(f"source blob {sha[:12]} was not uploaded")
        tmp = dest.with_name(dest.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        try:
            with tarfile.open(blob) as tar:
                tar.extractall(tmp, filter="data")
        except (tarfile.TarError, EOFError, OSError, ValueError) as exc:
            # Any bytes can be uploaded as a blob; only the deploy that names it as its
            # source learns that they are not a usable archive.
            shutil.rmtree(tmp, ignore_errors=True)
            raise InvalidError(
                f"source blob {sha[:12]} is not a usable source archive: {exc}"
            ) from None
        # Compiled here (compiling runs none of it): containers see sources read-only, and
        # would otherwise compile the app's modules again at every cold start. A file that
        # does not compile is left for the import in the container to report.
        compileall.compile_dir(tmp, quiet=2, workers=1)
        (tmp / ".ok").touch()
        shutil.rmtree(dest, ignore_errors=True)
        tmp.rename(dest)
        return dest

    def mount_dir(self, image: dict[str, Any]) -> Path | None:
        """Where an image's copy=False files are materialised, named after those files.

        Not after the image's build hash: copy=False files are left out of that hash, so two
        apps on one base image would otherwise share (and overwrite) each other's files.
        """
        entries = [f for f in image.get("files", []) if not f.get("copy")]
        if not entries:
            return None
        listing = [[f["remote_path"], f["kind"], f["sha256"]] for f in entries]
        key = hashlib.sha256(json.dumps(listing, separators=(",", ":")).encode()).hexdigest()
        return self.home / "mounts" / key

    # -- secrets ------------------------------------------------------------------------
    def put_secret(self, environment: str, name: str, values: dict[str, str], force: bool) -> None:
        validate_name("secret", name)
        if not values or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in values.items()
        ):
            raise InvalidError("a secret needs at least one KEY=VALUE pair of strings")
        for key in values:
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
                raise InvalidError(f"secret key {key!r} is not a valid environment variable name")
        data = self.box.encrypt(json.dumps(values).encode())
        if not self.store.put_secret(environment, name, data, overwrite=force):
            raise AlreadyExistsError(f"secret {name!r} already exists; use --force to replace it")

    def secret_values(self, environment: str, name: str) -> dict[str, str]:
        data = self.store.get_secret(environment, name)
        if data is None:
            raise NotFoundError(f"secret {name!r} not found in environment {environment!r}")
        values: dict[str, str] = json.loads(self.box.decrypt(data))
        return values

    def _check_secret(self, environment: str, ref: InlineSecret | NamedSecret) -> dict[str, Any]:
        """Check one secret reference and seal inline values; returns what is stored."""
        if isinstance(ref, InlineSecret):
            sealed = self.box.encrypt(json.dumps(ref.values).encode())
            return {"kind": "sealed", "data": base64.b64encode(sealed).decode()}
        env = ref.environment or environment
        values = self.secret_values(env, ref.name)
        missing = [k for k in ref.required_keys if k not in values]
        if missing:
            raise NotFoundError(
                f"secret {ref.name!r} is missing required keys: {', '.join(missing)}"
            )
        return {"kind": "named", "name": ref.name, "environment": env}

    def function_env(self, fdef: FunctionDef) -> dict[str, str]:
        env: dict[str, str] = {}
        for ref in (*fdef.spec.secrets, *fdef.extra_secrets):
            if isinstance(ref, SealedSecret):
                env.update(json.loads(self.box.decrypt(base64.b64decode(ref.data))))
            else:
                # A with_options secret without an environment is looked up as it always
                # was: under no environment (so it is not found).
                env.update(self.secret_values(ref.environment, ref.name))  # type: ignore[arg-type]
        return env

    # -- deploy -------------------------------------------------------------------------
    async def deploy(self, spec: DeployIn, log: Log) -> dict[str, Any]:
        """Check everything, build images, then (and only then) persist and go live."""
        return await self.finish_deploy(self.prepare_deploy(spec), log)

    def prepare_deploy(self, spec: DeployIn) -> _Prepared:
        """The checks a deploy needs before any build: its source, secrets and volumes.

        Run before the deploy's log starts streaming, so that what they refuse gets an
        HTTP status of its own."""
        if spec.ephemeral and spec.app_id and spec.app_id not in self.apps:
            raise NotFoundError(f"ephemeral app {spec.app_id} is not running")
        source_dir = str(self._source_dir(spec.source.blob)) if spec.source else None
        functions: dict[str, dict[str, Any]] = {}
        for tag, fn in spec.functions.items():
            fspec = fn.model_dump(mode="json", by_alias=True, exclude_unset=True)
            fspec["secrets"] = [self._check_secret(spec.environment, s) for s in fn.secrets]
            if self.builder.build_secrets is not None:
                # Before the version is stored: inline build-step values never are.
                fspec["image"] = self.builder.build_secrets.seal(fspec["image"])
            functions[tag] = fspec
        # Every volume checked (and only then any created) before anything else changes.
        self.volumes.attach(
            spec.environment, functions, forbidden=[self.home, self.scheduler.sockets_dir]
        )
        return _Prepared(spec, functions, source_dir)

    async def finish_deploy(self, prepared: _Prepared, log: Log) -> dict[str, Any]:
        spec, stored_functions, source_dir = prepared.spec, prepared.functions, prepared.source_dir
        name, environment, ephemeral = spec.name, spec.environment, spec.ephemeral
        built = await self._build_images(stored_functions, log, environment, force=spec.force_build)
        if ephemeral:
            app_id = spec.app_id or new_id("ap")
            if spec.app_id and spec.app_id not in self.apps:
                raise NotFoundError(f"ephemeral app {spec.app_id} is not running")
        else:
            existing = self.store.find_deployed_app(environment, name)
            app_id = existing["app_id"] if existing else new_id("ap")
        stored: dict[str, Any] = {
            "name": name,
            "environment": environment,
            "source": spec.source.model_dump() if spec.source else None,
            "functions": stored_functions,
        }
        # What is written must read back on the next start.
        load_stored(json.dumps(stored))
        urls = self._claim_endpoints(app_id, stored, ephemeral)
        version = self.store.save_app_version(
            app_id, name, environment, "ephemeral" if ephemeral else "deployed", stored
        )
        ids = self._activate(
            app_id, stored, version, "ephemeral" if ephemeral else "deployed", source_dir, built
        )
        await self.refresh_routes()
        self._event(app_id, f"deployed version {version}")
        return {"app_id": app_id, "version": version, "functions": ids, "web_urls": urls}

    async def _build_images(
        self, functions: dict[str, Any], log: Log, environment: str, *, force: bool = False
    ) -> dict[str, Any]:
        built = {}
        forced: set[str] = set()  # functions sharing an image: it is built again only once
        for tag, fspec in functions.items():
            img = fspec["image"]
            log(f"image for {tag}: checking")
            again = force and hash_build_spec(img) not in forced
            built[tag] = await self.builder.build(img, log, force=again, environment=environment)
            forced.add(built[tag].hash)
            mount = self.mount_dir(img)
            if mount is not None:
                await asyncio.to_thread(mount_files, img, mount)
        return built

    def _event(self, app_id: str, text: str) -> None:
        if self.logs is not None:
            self.logs.event(app_id, "-", "ketch", text)

    # -- versions (W7) ------------------------------------------------------------------
    def history(self, app_id: str) -> list[dict[str, Any]]:
        """Every version of an app, oldest first, marking the one being served."""
        live = self.apps.get(app_id)
        rows = []
        for version, text, created in self.store.app_versions(app_id):
            row: dict[str, Any] = {
                "version": version,
                "created": created,
                "source": None,
                "spec_hash": "-",
                "functions": [],
                "rollback_of": None,
                "live": live is not None and live["version"] == version,
                "error": None,
            }
            try:
                stored = load_stored(text)
            except InvalidError as exc:
                row["error"] = str(exc)
            else:
                row.update(
                    source=(stored.get("source") or {}).get("blob"),
                    spec_hash=_spec_hash(stored),
                    functions=sorted(stored["functions"]),
                    rollback_of=stored.get("rollback_of"),
                )
            rows.append(row)
        return rows

    def stored_versions(self, app_id: str) -> list[tuple[int, dict[str, Any]]]:
        """The versions of an app that still read back (a damaged one is left out)."""
        out = []
        for version, text, _ in self.store.app_versions(app_id):
            with contextlib.suppress(InvalidError):
                out.append((version, load_stored(text)))
        return out

    async def rollback(self, app_id: str, version: int | None, log: Log) -> dict[str, Any]:
        """Serve an earlier version again, as a new version whose spec is the old one's.

        It goes live like a redeploy: the new version's containers start on demand while
        the old ones finish what they hold (a rolling replacement with the URLs kept)."""
        app = self.apps.get(app_id)
        if app is None or app["state"] != "deployed":
            raise InvalidError(f"app {app_id} is not deployed; only a deployed app rolls back")
        versions = {v: text for v, text, _ in self.store.app_versions(app_id)}
        current = int(app["version"])
        if version is None:
            earlier = [v for v in versions if v < current]
            if not earlier:
                raise NotFoundError(f"app {app['name']!r} has no version before {current}")
            version = max(earlier)
        if version not in versions:
            raise NotFoundError(
                f"app {app['name']!r} has no version {version} (it has 1 to {max(versions)})"
            )
        if version == current:
            raise InvalidError(f"version {version} of {app['name']!r} is already live")
        try:
            model = decode_stored(versions[version])
        except InvalidError as exc:
            raise InvalidError(
                f"version {version} of {app['name']!r} cannot be served again: {exc}"
            ) from None
        for fn in model.functions.values():
            for ref in fn.secrets:
                if isinstance(
                    ref, StoredNamedSecret
                ):  # deleted since: refuse before anything changes
                    self.secret_values(ref.environment, ref.name)
        old = model.model_dump(mode="json", by_alias=True, exclude_unset=True)
        stored = {
            **old,
            "rollback_of": version,
            "functions": {tag: dict(f) for tag, f in old["functions"].items()},
        }
        built = await self._build_images(stored["functions"], log, stored["environment"])
        source_dir = None
        if stored.get("source"):
            source_dir = str(self._source_dir(stored["source"]["blob"]))
        self._claim_endpoints(app_id, stored, ephemeral=False)
        new = self.store.save_app_version(
            app_id, stored["name"], stored["environment"], "deployed", stored
        )
        self._activate(app_id, stored, new, "deployed", source_dir, built)
        await self.refresh_routes()
        self._event(app_id, f"rolled back to version {version} (as version {new})")
        return {"app_id": app_id, "version": new, "rollback_of": version}

    # -- web endpoints ------------------------------------------------------------------
    def _endpoints(
        self, app_id: str, stored: dict[str, Any], ephemeral: bool, reserve: bool = True
    ) -> list[Any]:
        if self.web is None:
            return []
        from ketch._server.endpoints import app_endpoints

        return app_endpoints(
            self.web, app_id, stored, ephemeral=ephemeral, workspace=self.workspace, reserve=reserve
        )

    def _claim_endpoints(
        self, app_id: str, stored: dict[str, Any], ephemeral: bool
    ) -> dict[str, str]:
        """Check the app's labels are free (a second `serve` of an app takes them over from
        the first) and record each endpoint's URL in its function spec."""
        # Checked before any port is reserved: a refused deploy writes nothing.
        endpoints = self._endpoints(app_id, stored, ephemeral, reserve=False)
        if not endpoints:
            return {}
        assert self.web is not None
        taken_over = [
            other_id
            for other_id, other in self.apps.items()
            if ephemeral
            and other_id != app_id
            and other["state"] == "ephemeral"
            and other["name"] == stored["name"]
            and other["environment"] == stored["environment"]
        ]
        self.web.check_conflicts(endpoints, {app_id, *taken_over})
        for other_id in taken_over:
            self.logs_note(other_id, "another `ketch serve` of this app took its URLs over")
            self.stop(other_id)
        endpoints = self._endpoints(app_id, stored, ephemeral)
        urls = {}
        for ep in endpoints:
            stored["functions"][ep.tag]["web_url"] = urls[ep.tag] = self.web.url(ep)
            stored["functions"][ep.tag]["web_host_url"] = self.web.host_url(ep)
        return urls

    async def refresh_routes(self) -> None:
        if self.web is None:
            return
        endpoints = []
        for app_id, app in self.apps.items():
            endpoints.extend(self._endpoints(app_id, app["stored"], app["state"] == "ephemeral"))
        await self.web.update(endpoints)

    def logs_note(self, app_id: str, line: str) -> None:
        if self.on_note is not None:
            self.on_note(app_id, line)

    def _activate(
        self,
        app_id: str,
        stored: dict[str, Any],
        version: int,
        state: str,
        source_dir: str | None,
        built: dict[str, Any],
    ) -> dict[str, str]:
        ids: dict[str, str] = {}
        old = self.apps.get(app_id)
        # Decoded once, here: the scheduler reads each function's spec as typed attributes.
        typed = StoredApp.model_validate_json(json.dumps(stored)).functions
        for tag, fspec in stored["functions"].items():
            fid = stable_id("fu", app_id, tag)
            mount = self.mount_dir(fspec["image"])
            fdef = FunctionDef(
                function_id=fid,
                app_id=app_id,
                app_name=stored["name"],
                environment=stored["environment"],
                version=version,
                tag=tag,
                spec=typed[tag],
                image=built[tag],
                source_dir=source_dir,
                mount_dir=str(mount / "root") if mount and (mount / "root").exists() else None,
                files_dir=str(mount) if mount and mount.is_dir() else None,
                volumes=self.volumes.host_mounts(typed[tag].volumes),
            )
            # Settings update_autoscaler gave this version outlive a restart.
            self.scheduler.register(
                autoscaler_overrides.restore(self.store, fdef), prepare=state == "deployed"
            )
            ids[tag] = fid
        if old is not None:
            for fid in set(old["functions"].values()) - set(ids.values()):
                self.scheduler.functions.pop(fid, None)
        self.apps[app_id] = {
            "app_id": app_id,
            "name": stored["name"],
            "environment": stored["environment"],
            "state": state,
            "version": version,
            "functions": ids,
            "stored": stored,
        }
        self.broken.pop(app_id, None)
        return ids

    async def restore(self, log: Log) -> int:
        """Bring deployed apps back after a server start.

        One app that cannot come back (a version damaged in the store, a lost source, an
        image that no longer builds) must not keep the server or the other apps down: it
        is marked broken, with its error, stays recorded, and a redeploy brings it back."""
        self.store.mark_ephemeral_stopped()
        n = 0
        for app, text in self.store.live_apps():
            app_id = app["app_id"]
            try:
                await self._restore_one(app_id, int(app["version"]), text, log)
            except Exception as exc:
                if app_id not in self.apps:
                    self.scheduler.unregister_app(app_id)  # whatever got registered goes
                error = str(exc) or type(exc).__name__
                self.broken[app_id] = {
                    "name": str(app["name"]),
                    "environment": str(app["environment"]),
                    "error": error,
                }
                log(f"app {app['name']!r} ({app_id}) not restored: {error}")
                continue
            n += 1
        await self.refresh_routes()
        return n

    async def _restore_one(self, app_id: str, version: int, text: str, log: Log) -> None:
        stored = load_stored(text)
        built = {}
        for tag, f in stored["functions"].items():
            built[tag] = await self.builder.build(
                f["image"], log, environment=stored["environment"]
            )
            mount = self.mount_dir(f["image"])
            if mount is not None and not (mount / ".ok").exists():
                # Made by an older server under another name, or removed by hand.
                await asyncio.to_thread(mount_files, f["image"], mount)
        source_dir = None
        if stored.get("source"):
            source_dir = str(self._source_dir(stored["source"]["blob"]))
        self._claim_endpoints(app_id, stored, ephemeral=False)
        self._activate(app_id, stored, version, "deployed", source_dir, built)

    def find_broken(self, environment: str, name: str) -> str | None:
        """The id of a deployed app of that name (or id) that did not come back on start."""
        for app_id, info in self.broken.items():
            if app_id == name or (info["name"] == name and info["environment"] == environment):
                return app_id
        return None

    def stop(self, app_id: str) -> None:
        if self.broken.pop(app_id, None) is not None:
            self.store.set_app_state(app_id, "stopped")
            return
        app = self.apps.pop(app_id, None)
        if app is None:
            raise NotFoundError(f"app {app_id} is not running")
        self.store.set_app_state(app_id, "stopped")
        self.scheduler.unregister_app(app_id)
        if self.web is not None:
            task = asyncio.ensure_future(self.refresh_routes())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def find(self, environment: str, name: str) -> dict[str, Any] | None:
        for app in self.apps.values():
            if (
                app["environment"] == environment
                and app["name"] == name
                and app["state"] == "deployed"
            ):
                return app
        return None

    def lookup(self, environment: str, app_name: str, tag: str) -> dict[str, Any]:
        app = self.find(environment, app_name)
        if app is None:
            raise NotFoundError(
                f"cannot find function {tag!r}: app {app_name!r} is not deployed in "
                f"environment {environment!r}"
            )
        fid = app["functions"].get(tag)
        if fid is None:
            raise NotFoundError(
                f"app {app_name!r} has no function {tag!r} (it has: "
                f"{', '.join(sorted(app['functions'])) or 'none'})"
            )
        spec = self.scheduler.functions[fid].spec
        # A class's web methods are endpoints of their own, tagged "<Cls>.<method>".
        web_methods = {
            other.partition(".")[2]: self.scheduler.functions[ofid].spec.web_url
            for other, ofid in app["functions"].items()
            if spec.kind == "cls"
            and other.startswith(f"{tag}.")
            and ofid in self.scheduler.functions
        }
        return {
            "function_id": fid,
            "app_id": app["app_id"],
            "tag": tag,
            "kind": spec.kind,
            "is_generator": spec.is_generator,
            "web_url": spec.web_url,
            "methods": {name: m.model_dump() for name, m in spec.methods.items()},
            "web_methods": web_methods,
            "params": list(spec.params),
        }


def _spec_hash(stored: dict[str, Any]) -> str:
    """What a version runs, in one hash: its functions' code and settings. Sealed secret
    values are left out (sealing is randomised) and so are the URLs given at deploy."""
    functions = {
        tag: {k: v for k, v in f.items() if k not in ("web_url", "web_host_url", "secrets")}
        for tag, f in stored.get("functions", {}).items()
    }
    text = json.dumps([functions, stored.get("source")], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]
