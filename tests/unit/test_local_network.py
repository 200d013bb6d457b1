"""The local backend's network plumbing that needs no server: refusing web_server
containers without slirp4netns, and the resolv.conf a namespaced container gets."""

from __future__ import annotations

import asyncio
import shutil
import sys
from pathlib import Path

import pytest

from ketch._backends import local
from ketch._backends.base import ContainerSpec


@pytest.mark.spec("W4")
def test_isolated_container_is_refused_without_slirp4netns(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    real_which = shutil.which
    monkeypatch.setattr(
        shutil,
        "which",
        lambda name, *a, **k: None if name == "slirp4netns" else real_which(name, *a, **k),
    )
    spec = ContainerSpec(
        container_id="ta-test",
        python=Path(sys.executable),
        env={},
        cwd=tmp_path,
        isolate_network=True,
    )
    with pytest.raises(RuntimeError, match=r"need slirp4netns.*apt-get install slirp4netns"):
        asyncio.run(local.LocalBackend().start(spec, lambda stream, line: None))


@pytest.mark.spec("A2b")
@pytest.mark.parametrize(
    ("conf", "expected"),
    [
        (
            "nameserver 127.0.0.53\noptions edns0 trust-ad\nsearch lan\n",
            "nameserver 10.0.2.3\noptions edns0 trust-ad\nsearch lan\n",
        ),
        ("nameserver ::1\n", "nameserver 10.0.2.3\n"),
        ("nameserver 10.255.255.53\n", None),  # reachable through slirp4netns as it is
        ("nameserver 127.0.0.1\nnameserver 192.0.2.53\n", None),  # one reachable is enough
        ("# no servers: the resolver's own default\n", None),
    ],
)
def test_resolv_conf_override(tmp_path: Path, conf: str, expected: str | None) -> None:
    path = tmp_path / "resolv.conf"
    path.write_text(conf)
    assert local._resolv_conf_override(path) == expected


@pytest.mark.spec("A2b")
def test_resolv_conf_override_without_a_file(tmp_path: Path) -> None:
    assert local._resolv_conf_override(tmp_path / "missing") is None
