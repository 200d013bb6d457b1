"""Per-handle options of a class (A6): `with_options`, `with_concurrency` and
`with_batching` each give the calls through that handle a container pool of their own with
the overridden settings, while the plain handle keeps its own."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

import ketch
from ketch._backends.limits import find_mounts
from ketch.exception import FunctionTimeoutError, InvalidError
from supports import cls_options


@pytest.mark.spec("A6", "S8")
def test_with_options_runs_in_a_pool_of_its_own(server: object) -> None:
    with cls_options.app.run(show_logs=False):
        plain = cls_options.Probe().info.remote()
        custom = cls_options.Probe.with_options(
            memory=256,
            secrets=[ketch.Secret.from_dict({"OPT_SECRET": "yes"})],
            timeout=2,
        )
        seen = custom().info.remote()
        assert seen["pid"] != plain["pid"]  # another container, of another pool
        assert seen["secret"] == "yes" and plain["secret"] is None
        if find_mounts().v1.get("memory") is not None:
            assert seen["memory_limit"] == str(256 * 2**20)
        # Its own timeout: 2 s where the class has the default.
        with pytest.raises(FunctionTimeoutError):
            custom().span.remote(5)
        assert cls_options.Probe().span.remote(0.1)[0] == plain["pid"]


@pytest.mark.spec("A6", "S3")
def test_with_concurrency_lets_one_container_take_inputs_at_once(server: object) -> None:
    with cls_options.app.run(show_logs=False):
        # max_containers=1 on the class: one input at a time, unless concurrency is raised.
        wide = cls_options.Probe.with_concurrency(max_inputs=4)()
        with ThreadPoolExecutor(4) as pool:
            spans = list(pool.map(lambda _: wide.span.remote(1.0), range(4)))
        assert len({pid for pid, _, _ in spans}) == 1
        starts, ends = [s for _, s, _ in spans], [e for _, _, e in spans]
        assert max(starts) < min(ends)  # all four ran at the same time in one container


@pytest.mark.spec("A6", "S5")
def test_with_batching_groups_the_calls_of_that_handle(server: object) -> None:
    with cls_options.app.run(show_logs=False):
        assert cls_options.Sizer().size.remote(1) == -1
        batched = cls_options.Sizer.with_batching(max_batch_size=4, wait_ms=1000)()
        with ThreadPoolExecutor(8) as pool:
            sizes = list(pool.map(lambda i: batched.size.remote(i), range(8)))
        assert all(1 <= s <= 4 for s in sizes) and max(sizes) > 1


@pytest.mark.spec("A6")
def test_bad_per_handle_options_are_refused() -> None:
    with pytest.raises(InvalidError, match="timeout"):
        cls_options.Probe.with_options(timeout=0)
    with pytest.raises(InvalidError, match="min_containers"):
        cls_options.Probe.with_options(min_containers=3)  # the class has max_containers=1
    with pytest.raises(InvalidError, match="max_inputs"):
        cls_options.Probe.with_concurrency(max_inputs=0)
    with pytest.raises(InvalidError, match="cannot also be batched"):
        cls_options.Probe.with_concurrency(max_inputs=2).with_batching(max_batch_size=2, wait_ms=1)
