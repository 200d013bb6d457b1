"""Function handles without a server (issue 15): with_options / with_concurrency /
with_batching on plain functions (a derived handle, the original unchanged, the checks
Cls's have), and update_autoscaler's checks, made before anything is sent."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

import ketch
from ketch.exception import InvalidError, KetchDeprecationWarning

pytestmark = pytest.mark.spec("C7", "A6")

app = ketch.App("fn-handles-unit")


@app.function(max_containers=2)
def plain(x: int) -> int:
    return x


@app.function()
def gen() -> Iterator[int]:
    yield 1


@app.cls()
class Model:
    @ketch.method()
    def run(self) -> int:
        return 1


@app.function()
@ketch.fastapi_endpoint()
def page() -> dict[str, Any]:
    return {}


def test_with_options_derives_a_handle_and_leaves_the_original_alone() -> None:
    secret = ketch.Secret.from_dict({"K": "v"})
    custom = plain.with_options(timeout=7, secrets=[secret], scaledown_window=30)
    assert isinstance(custom, ketch.Function) and custom is not plain
    req = custom._request((1,), {})
    assert req["options"]["timeout"] == 7 and req["options"]["scaledown_window"] == 30
    assert req["options"]["secrets"] == [secret.spec()]
    assert "options" not in plain._request((1,), {})
    # Derived again: the overrides add up, each handle keeping its own.
    both = custom.with_concurrency(max_inputs=4, target_inputs=2)
    assert both._request((), {})["options"] == {
        **req["options"],
        "max_inputs": 4,
        "target_inputs": 2,
    }
    assert "max_inputs" not in custom._request((), {})["options"]
    batched = plain.with_batching(max_batch_size=8, wait_ms=100)
    assert batched._request((), {})["options"] == {"batch_max_size": 8, "batch_wait_ms": 100}
    assert custom.local(3) == 3  # still the user's function


def test_per_handle_options_are_checked_as_the_decorator_checks_them() -> None:
    with pytest.raises(InvalidError, match="timeout"):
        plain.with_options(timeout=0)
    with pytest.raises(InvalidError, match="min_containers"):
        plain.with_options(min_containers=3)  # the function has max_containers=2
    assert plain.with_options(max_containers=5).with_options(min_containers=3)
    with pytest.raises(InvalidError, match="max_inputs"):
        plain.with_concurrency(max_inputs=0)
    with pytest.raises(InvalidError, match="cannot also be batched"):
        plain.with_concurrency(max_inputs=2).with_batching(max_batch_size=2, wait_ms=1)
    with pytest.raises(InvalidError, match="cannot also take concurrent"):
        plain.with_batching(max_batch_size=2, wait_ms=1).with_concurrency(max_inputs=2)
    with pytest.raises(InvalidError, match="generator"):
        gen.with_batching(max_batch_size=2, wait_ms=1)
    with pytest.raises(InvalidError, match="web endpoint"):
        page.with_options(timeout=5)


def test_update_autoscaler_checks_before_sending() -> None:
    # None of these reach a server: there is none in unit tests.
    with pytest.raises(InvalidError, match="min_containers"):
        plain.update_autoscaler(min_containers=-1)
    with pytest.raises(InvalidError, match="max_containers"):
        plain.update_autoscaler(max_containers=0)
    with pytest.raises(InvalidError, match="must be at least min_containers"):
        plain.update_autoscaler(min_containers=3, max_containers=2)
    with pytest.raises(InvalidError, match="scaledown_window"):
        plain.update_autoscaler(scaledown_window=0)
    with pytest.raises(InvalidError, match="original handle"):
        plain.with_options(timeout=5).update_autoscaler(min_containers=1)
    with pytest.raises(InvalidError, match="original handle"):
        plain.with_options(timeout=5).get_current_stats()
    with pytest.raises(InvalidError, match="for the class itself"):
        Model.with_options(timeout=5)().update_autoscaler(min_containers=1)  # type: ignore[attr-defined]
    with pytest.raises(InvalidError, match="max_containers"):
        Model().update_autoscaler(max_containers=0)  # type: ignore[attr-defined]


def test_keep_warm_is_a_deprecated_alias(monkeypatch: pytest.MonkeyPatch) -> None:
    sent: list[dict[str, Any]] = []

    async def fake(fn: Any, settings: dict[str, Any]) -> None:
        sent.append(settings)

    monkeypatch.setattr("ketch.functions.update_autoscaler", fake)
    with pytest.warns(KetchDeprecationWarning, match="update_autoscaler"):
        plain.keep_warm(2)
    assert sent == [{"min_containers": 2}]


def test_app_lookup_checks_the_name() -> None:
    with pytest.raises(InvalidError, match="invalid app name"):
        ketch.App.lookup("no/slashes")
