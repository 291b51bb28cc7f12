"""Issue 16: one stats shape, `as_dict()` and a one-row `to_dataframe()`, on every stats class."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field, fields
from typing import ClassVar

import pandas as pd
import pytest
import redis.asyncio as aioredis

from labcache.breaker import BreakerStats, CircuitBreaker
from labcache.flusher import Flusher, FlushStats, Lag
from labcache.lab.data import InsuranceDB, Latency
from labcache.stats import Counters


@dataclass
class Sample(Counters):
    """A stats class as a module would write one: counters, a derived rate, a collection."""

    DERIVED: ClassVar[tuple[str, ...]] = ("requests", "hit_rate")
    hits: int = 0
    misses: int = 0
    seconds: float = 0.0
    failed: dict[str, str] = field(default_factory=dict)

    @property
    def requests(self) -> int:
        return self.hits + self.misses

    @property
    def hit_rate(self) -> float:
        return self.hits / self.requests if self.requests else 0.0


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def assert_one_row(frame: pd.DataFrame, expected: dict[str, float]) -> None:
    assert isinstance(frame, pd.DataFrame)
    assert list(frame.columns) == list(expected) and len(frame) == 1
    assert frame.iloc[0].to_dict() == pytest.approx(expected)


# -- the mixin -------------------------------------------------------------------------------


def test_as_dict_lists_the_fields_then_the_derived_values() -> None:
    stats = Sample(hits=3, misses=1, seconds=0.25, failed={"a": "boom", "b": "gone"})
    assert stats.as_dict() == {"hits": 3, "misses": 1, "seconds": 0.25, "failed": 2,
                               "requests": 4, "hit_rate": 0.75}  # fmt: skip
    assert list(stats.as_dict()) == ["hits", "misses", "seconds", "failed", "requests", "hit_rate"]


def test_as_dict_follows_the_counts_as_they_change() -> None:
    stats = Sample()
    assert stats.as_dict()["hit_rate"] == 0.0  # no requests: 0, not a division by zero
    stats.misses += 1
    stats.hits += 1
    assert (stats.as_dict()["requests"], stats.as_dict()["hit_rate"]) == (2, 0.5)


def test_to_dataframe_is_one_row_with_the_same_values() -> None:
    stats = Sample(hits=9, misses=3, seconds=1.5)
    frame = stats.to_dataframe()
    assert_one_row(frame, stats.as_dict())
    assert frame.loc[0, "hit_rate"] == 0.75
    both = pd.concat([Sample(hits=1).to_dataframe(), frame], keys=["a", "b"])
    assert list(both["requests"]) == [1, 12]  # tables of several objects stack


def test_a_derived_name_that_does_not_exist_fails_when_the_class_is_made() -> None:
    with pytest.raises(TypeError, match=r"Broken.DERIVED names unknown attributes: \['hit_rat'\]"):

        @dataclass
        class Broken(Counters):
            DERIVED: ClassVar[tuple[str, ...]] = ("hit_rat",)
            hits: int = 0


def test_derived_as_a_bare_string_is_refused() -> None:
    with pytest.raises(TypeError, match="tuple of names, not a string"):

        @dataclass
        class Bare(Counters):
            DERIVED: ClassVar[tuple[str, ...]] = "requests"  # type: ignore[assignment]
            requests: int = 0


def test_a_field_that_is_not_a_number_is_named_in_the_error() -> None:
    @dataclass
    class Named(Counters):
        label: str = "x"

    with pytest.raises(TypeError, match=r"Named.label is str, not a number"):
        Named().as_dict()


def test_a_class_that_is_not_a_dataclass_is_refused() -> None:
    class Plain(Counters):
        pass

    with pytest.raises(TypeError, match="dataclass"):
        Plain().as_dict()


# -- the library's stats classes --------------------------------------------------------------


def test_breaker_stats_count_a_real_open_probe_close_cycle() -> None:
    clock = Clock()
    breaker = CircuitBreaker(failure_threshold=2, reset_timeout=1.0, clock=clock)
    for _ in range(2):
        assert breaker.allow()
        breaker.failure(ConnectionError("refused"))
    assert not breaker.allow()  # open: rejected without a call
    clock.now += 1.0
    assert breaker.allow()  # half-open: the probe
    breaker.success()
    expected = {"successes": 1, "failures": 2, "rejected": 1, "timeouts": 0, "opened": 1,
                "half_opened": 1, "closed": 1}  # fmt: skip
    assert breaker.stats.as_dict() == expected
    assert [f.name for f in fields(BreakerStats)] == list(expected)
    assert_one_row(breaker.stats.to_dataframe(), expected)


@pytest.fixture
def db() -> Iterator[InsuranceDB]:
    database = InsuranceDB(latency=Latency.zero())
    yield database
    database.close()


async def test_flush_stats_and_lag_of_a_real_flusher(
    redis: aioredis.Redis, namespace: str, db: InsuranceDB
) -> None:
    stream = namespace + "w"
    for version, premium in ((2, 700.0), (1, 600.0)):  # the older one arrives second: stale
        fields_ = json.dumps({"premium": premium})
        await redis.xadd(stream, {"key": "policy:12345", "table": "policies", "id": "12345",
                                  "fields": fields_, "version": version})  # fmt: skip
    flusher = Flusher(redis, db, stream)
    lag = await flusher.lag()
    assert lag.as_dict() == {"pending": 0, "undelivered": 2, "oldest_age": lag.oldest_age,
                             "total": 2}  # fmt: skip
    assert await flusher.flush() == 2
    expected = {"queued": 0, "batches": 1, "applied": 1, "stale": 1, "dead": 0, "reclaimed": 0,
                "failures": 0}  # fmt: skip
    assert flusher.stats.as_dict() == expected
    assert_one_row(flusher.stats.to_dataframe(), expected)
    assert (await flusher.lag()).as_dict()["total"] == 0
    assert isinstance(flusher.stats, FlushStats) and isinstance(lag, Lag)
