"""Turning a batch of calls into one call with lists, and its result back (S5)."""

from __future__ import annotations

import pytest

from ketch._runtime.batch import collate, split
from ketch.exception import InvalidError


def f(xs: list[int], ys: list[int], scale: list[int] | None = None) -> list[int]:
    return xs


@pytest.mark.spec("S5")
def test_arguments_become_one_list_per_parameter_with_defaults() -> None:
    col = collate(f, [("a", (1, 2), {}), ("b", (3,), {"ys": 4, "scale": 9}), ("c", (), {})])
    assert col.iids == ["a", "b"]
    assert col.keyword == {"xs": [1, 3], "ys": [2, 4], "scale": [None, 9]}
    assert isinstance(col.refused["c"], TypeError)


def test_star_args_cannot_be_batched() -> None:
    def g(*xs: int) -> None: ...

    with pytest.raises(InvalidError, match=r"\*args"):
        collate(g, [("a", (1,), {})])


@pytest.mark.spec("S5")
def test_results_must_line_up_with_the_inputs() -> None:
    assert split([1, 2], 2, "f") == [1, 2]
    assert split((1, 2), 2, "f") == [1, 2]
    with pytest.raises(InvalidError, match="returned 1 results for 2 inputs"):
        split([1], 2, "f")
    with pytest.raises(InvalidError, match="must return a list"):
        split(3, 1, "f")
