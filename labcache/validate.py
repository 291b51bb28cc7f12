"""Checks for option values: each returns the value, normalised, or a ValueError naming it.

One rule for every class: a bad value — wrong type, NaN, infinite or out of range — raises
`ValueError` whose message names the option and shows what was given, before anything is sent
to Redis. A bool is never a number here (`ttl=True` is a mistake, not one second).
"""

from __future__ import annotations

import math
from typing import TypeGuard


def _finite_number(value: object) -> TypeGuard[int | float]:
    return not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)


def positive_seconds(value: object, name: str = "ttl") -> float:
    """A finite number of seconds > 0 (a TTL)."""
    if not _finite_number(value) or value <= 0:
        raise ValueError(f"{name} must be a positive number of seconds, not {value!r}")
    return float(value)


def seconds(value: object, name: str) -> float:
    """A finite number of seconds >= 0 (0 usually turns the option off)."""
    if not _finite_number(value) or value < 0:
        raise ValueError(f"{name} must be a number of seconds >= 0, not {value!r}")
    return float(value)


def non_negative(value: object, name: str) -> float:
    """A finite number >= 0 (a factor, not a duration)."""
    if not _finite_number(value) or value < 0:
        raise ValueError(f"{name} must be a number >= 0, not {value!r}")
    return float(value)


def fraction(value: object, name: str) -> float:
    """A number in [0, 1)."""
    if not _finite_number(value) or not 0 <= value < 1:
        raise ValueError(f"{name} must be a number in [0, 1), not {value!r}")
    return float(value)


def whole(value: object, name: str, minimum: int = 1) -> int:
    """A whole number >= `minimum` (a count, a size)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be a whole number, at least {minimum}, not {value!r}")
    return value


def optional_whole(value: object, name: str, minimum: int = 1) -> int | None:
    """None (no limit) or a whole number >= `minimum`."""
    return None if value is None else whole(value, name, minimum)
