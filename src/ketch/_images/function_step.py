"""Image.run_function on the builder's side: the program that calls the pickled function
inside the image being built, and what the step is lent only while it runs (its secrets'
values, its volumes, ketch's runtime), none of which is part of its layer's key."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ketch._images.bwrap import Bind
from ketch._images.dockerfile import Run
from ketch._images.process import ImageBuildError
from ketch._images.rootfs import Op
from ketch.exception import NotFoundError

__all__ = ["BOOTSTRAP", "RAISED", "FunctionResources", "StepExtra", "function_op"]

_IN = "/tmp/.ketch/in"
_RUNTIME = "/tmp/.ketch/runtime"
# A bootstrap's last word on a raised exception, picked out of the log for the error.
RAISED = "ketch: the step raised "

# Run by the image's own Python. Only ketch's runtime (ketch, cloudpickle, msgpack) is
# added to its path, as in a container, so what the function imports is the image's.
BOOTSTRAP = f"""\
import base64, json, sys, traceback

with open({_IN + "/step.json"!r}, encoding="utf-8") as f:
    step = json.load(f)
try:
    import cloudpickle

    fn = cloudpickle.loads(base64.b64decode(step["function"]))
    args, kwargs = cloudpickle.loads(base64.b64decode(step["args"]))
    fn(*args, **kwargs)
except BaseException as exc:
    traceback.print_exc()
    sys.stderr.flush()
    print({RAISED!r} + type(exc).__name__ + (": " + str(exc) if str(exc) else ""), flush=True)
    sys.exit(1)
"""

SecretLookup = Callable[[str | None, str], Mapping[str, str]]
# The digest an inline secret was sealed under -> its values.
SealedLookup = Callable[[str], Mapping[str, str]]
# (the deploying app's environment, a volume reference of the step) -> its host directory
VolumeLookup = Callable[[str, Mapping[str, Any]], Path]


@dataclass(frozen=True)
class StepExtra:
    """What a run_function step gets when it really runs (never for a cached layer):
    `prepare` gives the environment and binds, `timeout` bounds it."""

    prepare: Callable[[], tuple[dict[str, str], list[Bind]]]
    name: str
    timeout: float | None = None

    async def run(self, build: Awaitable[None], description: str) -> None:
        try:
            await asyncio.wait_for(build, self.timeout)
        except TimeoutError:
            raise ImageBuildError(
                description, "", f"{self.name} ran past its timeout of {self.timeout:g} s"
            ) from None
        except ImageBuildError as exc:
            lines = exc.log_tail.splitlines()
            raised = [line for line in lines if line.startswith(RAISED)]
            if not raised:
                raise
            tail = "\n".join(line for line in lines if not line.startswith(RAISED))
            what = raised[-1].removeprefix(RAISED)
            raise ImageBuildError(exc.step, tail, f"{self.name} raised {what}") from None


@dataclass
class FunctionResources:
    """How the server lends a run_function step its secrets, volumes and ketch's runtime."""

    runtime: Callable[[], Path]
    secrets: SecretLookup | None = None
    volumes: VolumeLookup | None = None
    sealed: SealedLookup | None = None
    _runtime_dir: Path | None = field(default=None, repr=False)

    def extra(self, step: Mapping[str, Any], origin: str, *, environment: str) -> StepExtra:
        def prepare() -> tuple[dict[str, str], list[Bind]]:
            if self._runtime_dir is None:
                self._runtime_dir = self.runtime()
            env = {"PYTHONPATH": _RUNTIME, "PYTHONUNBUFFERED": "1", **step.get("env", {})}
            for ref in step.get("secrets", []):
                env.update(self._secret(ref, environment, origin))
            binds = [Bind(self._runtime_dir, _RUNTIME)]
            for ref in step.get("volumes", []):
                if self.volumes is None:
                    raise ImageBuildError(origin, "", "this server has no volumes to mount")
                path = self.volumes(environment, ref)
                binds.append(Bind(path, str(ref["mount"]), writable=True))
            return env, binds

        return StepExtra(prepare, str(step.get("name", "function")), float(step["timeout"]))

    def _secret(self, ref: Mapping[str, Any], environment: str, origin: str) -> dict[str, str]:
        if ref.get("digest"):
            if self.sealed is None:
                raise ImageBuildError(origin, "", "this server keeps no inline build secrets")
            try:
                return dict(self.sealed(str(ref["digest"])))
            except NotFoundError as exc:
                raise ImageBuildError(origin, "", str(exc)) from None
        if self.secrets is None:
            raise ImageBuildError(origin, "", "this server has no secrets to lend a build step")
        values = dict(self.secrets(ref.get("environment") or environment, str(ref["name"])))
        missing = [k for k in ref.get("required_keys", []) if k not in values]
        if missing:
            raise ImageBuildError(
                origin, "", f"secret {ref['name']!r} is missing required keys: {', '.join(missing)}"
            )
        return values


def function_op(step: Mapping[str, Any], python: str, origin: str, extra: StepExtra) -> Op:
    """The build op of a run_function step. The step itself, pickled function included,
    is one of its inputs, so its layer's key changes with the function's code."""
    body = json.dumps(dict(step), sort_keys=True, separators=(",", ":"))
    run = Run(argv=(python, f"{_IN}/run_function.py"), text=f"RUN {step.get('name')}()")
    inputs = (("run_function.py", BOOTSTRAP), ("step.json", body))
    return Op(run, origin, inputs=inputs, extra=extra)
