"""Classes (A6): typed parameters, @enter once per container, one pool per parameter set,
@exit on shutdown, generator methods, and `.local()` running @enter first (B2)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from ketch.exception import InvalidError
from supports import ident
from supports.ident import file_name
from supports.models import Model, app


def _wait_for(predicate: object, timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(0.1)
    return False


@pytest.mark.spec("A6")
def test_parameters_enter_pools_and_exit(server: object, tmp_path: Path) -> None:
    out = str(tmp_path)
    with app.run(show_logs=False):
        a1 = Model(name="a", size=1, outdir=out).predict.remote(10)
        a2 = Model(name="a", size=1, outdir=out).predict.remote(11)
        b = Model(name="b", size=2, fast=True, key=b"\x00k", outdir=out).predict.remote(12)

        assert (a1["x"], a1["name"], a1["size"], a1["fast"], a1["key"]) == (10, "a", 1, False, b"")
        assert (b["name"], b["size"], b["fast"], b["key"]) == ("b", 2, True, b"\x00k")
        # Same parameters: the same warm container, whose @enter ran once for both inputs.
        assert a1["pid"] == a2["pid"]
        assert (a1["enter_calls"], a2["enter_calls"]) == (1, 1)
        assert (a1["served"], a2["served"]) == (1, 2)
        # Other parameters: a pool (so a container) of their own.
        assert b["pid"] != a1["pid"]
        assert b["enter_calls"] == 1 and b["served"] == 1
        assert a1["pid"] != ident.me()

        # Defaults fill in what the caller leaves out.
        d = Model().predict.remote(0)
        assert (d["name"], d["size"], d["fast"], d["key"]) == ("base", 1, False, b"")
        assert d["pid"] not in (a1["pid"], b["pid"])

        # A generator method streams, with the instance's parameters.
        assert list(Model(name="g").stream.remote_gen(3)) == ["g-0", "g-1", "g-2"]
        with pytest.raises(InvalidError, match="remote_gen"):
            Model(name="g").stream.remote(3)

        enters = sorted(p.name for p in tmp_path.glob("enter-*"))
        assert enters == sorted([f"enter-{file_name(a1['pid'])}", f"enter-{file_name(b['pid'])}"])
        assert not list(tmp_path.glob("exit-*"))

    # Stopping the app stops its containers, and each runs its @exit hook on the way out.
    exits = {f"exit-{file_name(a1['pid'])}": "a:2", f"exit-{file_name(b['pid'])}": "b:1"}
    # Written, not just created: the hook may be between opening the file and writing it.
    assert _wait_for(
        lambda: all((tmp_path / n).exists() and (tmp_path / n).read_text() for n in exits)
    ), sorted(p.name for p in tmp_path.iterdir())
    for name, text in exits.items():
        assert (tmp_path / name).read_text() == text


@pytest.mark.spec("A6")
def test_bad_parameters_are_refused() -> None:
    with pytest.raises(InvalidError, match="colour"):
        Model(colour="red")
    with pytest.raises(InvalidError, match="size"):
        Model(size="big")
    with pytest.raises(InvalidError, match="fast"):
        Model(fast=1)
    with pytest.raises(InvalidError, match="key"):
        Model(key="not bytes")
    with pytest.raises(InvalidError, match="keyword"):
        Model("positional")
    with pytest.raises(InvalidError):
        Model(name=["a", "list"])
    with pytest.raises(AttributeError, match="nope"):
        _ = Model().nope


@pytest.mark.spec("A6")
def test_parameters_checked_under_postponed_annotations() -> None:
    from supports.typed_models import Tagged

    with pytest.raises(InvalidError, match="label"):
        Tagged()  # a parameter without a default must be given
    with pytest.raises(InvalidError, match="count"):
        Tagged(label="x", count="3")
    with pytest.raises(InvalidError, match="label"):
        Tagged(label=b"bytes")
    assert Tagged(label="x", count=2).show.local() == "x:2"


@pytest.mark.spec("B2")
def test_local_method_runs_enter_first(tmp_path: Path) -> None:
    m = Model(name="here", size=3, outdir=str(tmp_path))
    first = m.predict.local(1)
    second = m.predict.local(2)
    assert first["pid"] == ident.me()
    assert (first["name"], first["size"], first["enter_calls"]) == ("here", 3, 1)
    # @enter ran once, before the first call, for this instance.
    assert (second["enter_calls"], second["served"]) == (1, 2)
    assert (tmp_path / f"enter-{file_name(ident.me())}").read_text() == "here"
    assert list(m.stream.local(2)) == ["here-0", "here-1"]
