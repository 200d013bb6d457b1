"""The scheduler's periodic work: one pool that fails does not stop the others (issue 11)."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import pytest

from ketch._server.images import BuiltImage
from ketch._server.model import Container, FunctionDef, Pool
from ketch._server.scheduler import Scheduler
from ketch._utils.protocol.spec import ImageSpec, OptionsSpec, StoredFunction


class _Backend:
    def retire(self, group: str) -> None:
        pass


def _pool(sched: Scheduler, tag: str, options: Any) -> Container:
    img = BuiltImage(hash="", python=Path(), env={}, workdir=None, root=Path())
    # Built unchecked: the point is a spec that slipped past every check.
    spec = StoredFunction.model_construct(
        tag=tag, module="m", options=options, image=ImageSpec(python_version="3.12")
    )
    fdef = FunctionDef(
        f"fu-{tag}", "ap-1", "app", "main", 1, tag, spec, img, None, None
    )
    pool = Pool(key=f"fu-{tag}:1:-", function=fdef, params=None)
    c = Container(cid=f"ta-{tag}", pool=pool, state="ready")
    c.idle_since = time.monotonic() - 3600  # idle far past any scale-down window
    pool.containers[c.cid] = c
    sched.pools[pool.key] = pool
    sched.containers[c.cid] = c
    return c


def test_one_failing_pool_does_not_stop_the_others_scaling_down(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    sched = Scheduler(
        backend=_Backend(),
        store=None,
        logs=None,  # type: ignore[arg-type]
        call_addr="",
        token="",
        result_ttl=1.0,
        secret_env=lambda f: {},
        sockets_dir=tmp_path,
    )
    broken = _pool(sched, "broken", "x")  # options that slipped past every check
    healthy = _pool(sched, "healthy", OptionsSpec(scaledown_window=1))
    with caplog.at_level(logging.ERROR, logger="ketch.scheduler"):
        sched.tick()
        sched.tick()
    assert healthy.state == "draining" and healthy.stop_reason == "scaledown"
    assert broken.state == "ready"
    failures = [r for r in caplog.records if "periodic work" in r.getMessage()]
    assert len(failures) == 1 and "broken" in failures[0].getMessage()
