"""One rule for option values (labcache.validate): bad values raise ValueError naming the option."""

from __future__ import annotations

import math
from typing import Any

import pytest

from labcache import validate

BAD_NUMBERS = [True, "1", None, math.nan, math.inf, -math.inf, [1]]


@pytest.mark.parametrize("value", [*BAD_NUMBERS, 0, -1], ids=repr)
def test_positive_seconds_refuses_zero_negatives_and_non_numbers(value: Any) -> None:
    with pytest.raises(ValueError, match=r"^wait must be a positive number of seconds, not "):
        validate.positive_seconds(value, "wait")


@pytest.mark.parametrize("value", [*BAD_NUMBERS, -0.5], ids=repr)
def test_seconds_and_factors_refuse_negatives_and_non_numbers(value: Any) -> None:
    with pytest.raises(ValueError, match=r"^grace must be a number of seconds >= 0"):
        validate.seconds(value, "grace")
    with pytest.raises(ValueError, match=r"^beta must be a number >= 0"):
        validate.non_negative(value, "beta")


@pytest.mark.parametrize("value", [*BAD_NUMBERS, -0.1, 1, 1.5], ids=repr)
def test_fraction_is_in_zero_to_one(value: Any) -> None:
    with pytest.raises(ValueError, match=r"^f must be a number in \[0, 1\)"):
        validate.fraction(value, "f")


@pytest.mark.parametrize("value", [True, 2.0, "3", None, 0, -1], ids=repr)
def test_whole_numbers_are_ints_at_least_the_minimum(value: Any) -> None:
    with pytest.raises(ValueError, match=r"^count must be a whole number, at least 1, not "):
        validate.whole(value, "count")


def test_good_values_come_back_normalised() -> None:
    assert validate.positive_seconds(2) == 2.0 and isinstance(validate.positive_seconds(2), float)
    assert validate.seconds(0, "grace") == 0.0
    assert validate.non_negative(1.5, "beta") == 1.5
    assert validate.fraction(0, "f") == 0.0
    assert validate.whole(0, "n", minimum=0) == 0
    assert validate.optional_whole(None, "max_value_bytes") is None
    assert validate.optional_whole(10, "max_value_bytes") == 10
