"""Retry policies for functions: ``retries=N`` or ``Retries(...)`` with exponential backoff."""

from __future__ import annotations

import math
from dataclasses import dataclass

from ketch.exception import InvalidError

__all__ = ["Retries", "retries_from"]

MAX_RETRIES = 10


def _check_number(field: str, value: object, low: float, high: float, unit: str = "") -> float:
    # bool is an int subclass; Retries(True) is almost certainly a mistake.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidError(
            f"Retries: {field} must be a number between {low:g} and {high:g}{unit}, "
            f"got {value!r} ({type(value).__name__})"
        )
    if not low <= value <= high:  # NaN fails this too
        raise InvalidError(
            f"Retries: {field} must be between {low:g} and {high:g}{unit}, got {value!r}"
        )
    return float(value)


@dataclass(frozen=True)
class Retries:
    """How often, and after which delays, a failed input is run again.

    The k-th retry (k >= 1) starts ``min(initial_delay * backoff_coefficient**(k-1), max_delay)``
    seconds after the previous attempt failed.

    Args:
        max_retries: retries after the first attempt, 0 to 10.
        backoff_coefficient: growth factor of the delay between retries, 1 to 10.
        initial_delay: seconds before the first retry, 0 to 60.
        max_delay: upper bound of any delay in seconds, 1 to 60.
    """

    max_retries: int
    backoff_coefficient: float = 2.0
    initial_delay: float = 1.0
    max_delay: float = 60.0

    def __post_init__(self) -> None:
        n = self.max_retries
        if isinstance(n, bool) or not isinstance(n, int):
            raise InvalidError(
                f"Retries: max_retries must be an int between 0 and {MAX_RETRIES}, got {n!r}"
            )
        if not 0 <= n <= MAX_RETRIES:
            raise InvalidError(f"Retries: max_retries must be between 0 and {MAX_RETRIES}, got {n}")
        # Normalised to float so that Retries(3, 2) == Retries(3, 2.0).
        object.__setattr__(
            self,
            "backoff_coefficient",
            _check_number("backoff_coefficient", self.backoff_coefficient, 1, 10),
        )
        object.__setattr__(
            self, "initial_delay", _check_number("initial_delay", self.initial_delay, 0, 60, " s")
        )
        object.__setattr__(
            self, "max_delay", _check_number("max_delay", self.max_delay, 1, 60, " s")
        )

    def delay_for(self, k: int) -> float:
        """Return the delay in seconds before the ``k``-th retry (``k >= 1``)."""
        return backoff_delay(self.initial_delay, self.backoff_coefficient, self.max_delay, k)


def backoff_delay(
    initial_delay: float, backoff_coefficient: float, max_delay: float, k: int
) -> float:
    """``min(initial_delay * backoff_coefficient**(k-1), max_delay)``: the one copy of the
    formula, used by `Retries` and by the server's scheduler alike."""
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"retry number must be an int >= 1, got {k!r}")
    if initial_delay == 0:
        return 0.0
    # Compare in log space: backoff**(k-1) overflows a float long before k gets large.
    log_delay = math.log(initial_delay) + (k - 1) * math.log(backoff_coefficient)
    if log_delay >= math.log(max_delay):
        return float(max_delay)
    return float(min(initial_delay * backoff_coefficient ** (k - 1), max_delay))


def retries_from(value: int | Retries | None) -> Retries | None:
    """Normalise a function's ``retries=`` argument.

    An int ``N`` means N retries with a fixed 1 s delay. ``0``, ``None`` and a policy with
    ``max_retries=0`` all mean no retries and give ``None``.
    """
    if value is None:
        return None
    if isinstance(value, Retries):
        return value if value.max_retries > 0 else None
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidError(
            f"retries must be an int between 0 and {MAX_RETRIES} or a ketch.Retries, "
            f"got {value!r} ({type(value).__name__})"
        )
    if not 0 <= value <= MAX_RETRIES:
        raise InvalidError(
            f"retries must be between 0 and {MAX_RETRIES}, got {value}; "
            "for more control use ketch.Retries(max_retries=..., ...)"
        )
    if value == 0:
        return None
    return Retries(max_retries=value, backoff_coefficient=1.0, initial_delay=1.0)
