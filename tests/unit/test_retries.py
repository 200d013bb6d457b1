"""Retry policies: validation, delays and ``retries=N``."""

from __future__ import annotations

import itertools
import pickle

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ketch.exception import InvalidError
from ketch.retries import Retries, retries_from


@pytest.mark.spec("R2")
def test_defaults() -> None:
    r = Retries(max_retries=3)
    assert (r.max_retries, r.backoff_coefficient, r.initial_delay, r.max_delay) == (
        3,
        2.0,
        1.0,
        60.0,
    )


@pytest.mark.spec("R2")
@pytest.mark.parametrize(
    ("kwargs", "field", "bounds"),
    [
        ({"max_retries": -1}, "max_retries", "0 and 10"),
        ({"max_retries": 11}, "max_retries", "0 and 10"),
        ({"max_retries": 2.0}, "max_retries", "0 and 10"),
        ({"max_retries": True}, "max_retries", "0 and 10"),
        ({"max_retries": 1, "backoff_coefficient": 0.5}, "backoff_coefficient", "1 and 10"),
        ({"max_retries": 1, "backoff_coefficient": 10.5}, "backoff_coefficient", "1 and 10"),
        (
            {"max_retries": 1, "backoff_coefficient": float("nan")},
            "backoff_coefficient",
            "1 and 10",
        ),
        ({"max_retries": 1, "backoff_coefficient": "2"}, "backoff_coefficient", "1 and 10"),
        ({"max_retries": 1, "initial_delay": -0.1}, "initial_delay", "0 and 60"),
        ({"max_retries": 1, "initial_delay": 61}, "initial_delay", "0 and 60"),
        ({"max_retries": 1, "initial_delay": False}, "initial_delay", "0 and 60"),
        ({"max_retries": 1, "max_delay": 0.5}, "max_delay", "1 and 60"),
        ({"max_retries": 1, "max_delay": 60.5}, "max_delay", "1 and 60"),
        ({"max_retries": 1, "max_delay": None}, "max_delay", "1 and 60"),
    ],
)
def test_out_of_range_values_are_refused(
    kwargs: dict[str, object], field: str, bounds: str
) -> None:
    with pytest.raises(InvalidError, match=field) as info:
        Retries(**kwargs)  # type: ignore[arg-type]
    assert bounds in str(info.value)


@pytest.mark.spec("R2")
def test_boundaries_are_accepted() -> None:
    Retries(max_retries=0, backoff_coefficient=1, initial_delay=0, max_delay=1)
    Retries(max_retries=10, backoff_coefficient=10, initial_delay=60, max_delay=60)


@pytest.mark.spec("R2")
def test_delay_for_follows_the_formula() -> None:
    r = Retries(max_retries=5, backoff_coefficient=3.0, initial_delay=2.0, max_delay=30.0)
    assert [r.delay_for(k) for k in range(1, 6)] == [2.0, 6.0, 18.0, 30.0, 30.0]
    assert Retries(max_retries=3, initial_delay=0).delay_for(3) == 0.0
    # A huge k must not overflow.
    assert Retries(max_retries=3, backoff_coefficient=10).delay_for(10_000) == 60.0


def test_delay_for_rejects_k_below_one() -> None:
    with pytest.raises(ValueError, match=">= 1"):
        Retries(max_retries=1).delay_for(0)


@pytest.mark.spec("R2")
@given(
    max_retries=st.integers(0, 10),
    backoff=st.floats(1, 10),
    initial=st.floats(0, 60),
    max_delay=st.floats(1, 60),
)
def test_delays_are_monotone_and_bounded(
    max_retries: int, backoff: float, initial: float, max_delay: float
) -> None:
    r = Retries(max_retries, backoff, initial, max_delay)
    delays = [r.delay_for(k) for k in range(1, 40)]
    assert all(a <= b for a, b in itertools.pairwise(delays))
    assert all(0 <= d <= max_delay for d in delays)
    assert delays[0] == min(initial, max_delay)


def test_equality_repr_and_pickle() -> None:
    r = Retries(3, 2, 1, 10)
    assert r == Retries(max_retries=3, backoff_coefficient=2.0, initial_delay=1.0, max_delay=10.0)
    assert r != Retries(4, 2, 1, 10)
    assert repr(r) == (
        "Retries(max_retries=3, backoff_coefficient=2.0, initial_delay=1.0, max_delay=10.0)"
    )
    assert pickle.loads(pickle.dumps(r)) == r
    with pytest.raises(AttributeError):
        r.max_retries = 5  # type: ignore[misc]


@pytest.mark.spec("R1")
def test_int_retries_mean_a_fixed_one_second_delay() -> None:
    r = retries_from(3)
    assert r == Retries(max_retries=3, backoff_coefficient=1.0, initial_delay=1.0)
    assert r is not None
    assert [r.delay_for(k) for k in (1, 2, 3)] == [1.0, 1.0, 1.0]


@pytest.mark.spec("R1")
def test_retries_from_normalises_no_retries_to_none() -> None:
    assert retries_from(None) is None
    assert retries_from(0) is None
    assert retries_from(Retries(0)) is None
    policy = Retries(2, initial_delay=5)
    assert retries_from(policy) is policy


@pytest.mark.spec("R1")
@pytest.mark.parametrize("value", [-1, 11, True, 1.5, "3", [3]])
def test_retries_from_refuses_bad_values(value: object) -> None:
    with pytest.raises(InvalidError, match="retries"):
        retries_from(value)  # type: ignore[arg-type]
