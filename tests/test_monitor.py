"""CacheMonitor (Part 5): percentiles, hit-rate accounting, time series, advice; real Redis."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
import redis.asyncio as aioredis

from labcache.embedded import RedisServer
from labcache.events import ERROR, FALLBACK, HIT, LOAD, MISS, SET, CacheEvent
from labcache.lab.workload import VirtualClock
from labcache.monitor import CacheMonitor, LatencyHistogram, rate
from labcache.multilevel import Memory, MultiLevelCache
from tests.helpers import Loader

RESOLUTION = 10 ** (0.5 / 50) - 1  # half a bucket: the histogram's worst relative error


def histogram_of(samples: list[float]) -> LatencyHistogram:
    histogram = LatencyHistogram()
    for sample in samples:
        histogram.record(sample)
    return histogram


def test_percentiles_of_a_known_list() -> None:
    histogram = histogram_of([ms / 1000 for ms in range(1, 101)])  # 1..100 ms
    for p, expected_ms in [(50, 50), (95, 95), (99, 99), (1, 1)]:
        assert histogram.percentile(p) * 1000 == pytest.approx(expected_ms, rel=RESOLUTION)
    assert histogram.percentile(100) == 0.1  # max is exact
    assert histogram.min == 0.001
    assert histogram.mean == pytest.approx(0.0505)
    assert histogram.count == 100


def test_percentiles_match_numpy_nearest_rank_on_a_skewed_sample() -> None:
    rng = random.Random(5)
    samples = [rng.lognormvariate(-7, 1.5) for _ in range(5000)]  # ~1 ms median, long tail
    histogram = histogram_of(samples)
    for p in (50, 90, 95, 99, 99.9):
        exact = float(np.percentile(samples, p, method="inverted_cdf"))
        assert histogram.percentile(p) == pytest.approx(exact, rel=RESOLUTION)


def test_empty_histogram_and_bad_input() -> None:
    histogram = LatencyHistogram()
    assert math.isnan(histogram.percentile(99))
    assert math.isnan(histogram.mean)
    with pytest.raises(ValueError, match=r"within 0\.\.100"):
        histogram.percentile(101)
    with pytest.raises(ValueError, match="at least 1"):
        LatencyHistogram(per_decade=0)


def test_merged_histograms_equal_one_histogram_of_all_samples() -> None:
    a, b = [i / 1e4 for i in range(1, 50)], [i / 1e2 for i in range(1, 30)]
    merged = histogram_of(a)
    merged.merge(histogram_of(b))
    whole = histogram_of(a + b)
    assert merged.buckets == whole.buckets
    assert (merged.count, merged.min, merged.max) == (whole.count, whole.min, whole.max)


def event(kind: str, level: str = "", duration: float = 0.001, key: str = "k") -> CacheEvent:
    return CacheEvent(kind, key, level, duration)


def test_only_hit_events_count_as_hits() -> None:
    monitor = CacheMonitor(clock=VirtualClock())
    for e in [event(HIT, "l1"), event(HIT, "l2"), event(MISS, "source"), event(FALLBACK, "source"),
              event(LOAD, "source"), event(SET, "l2")]:  # fmt: skip
        monitor.record(e)
    assert (monitor.requests, monitor.hits, monitor.misses) == (4, 2, 2)
    assert monitor.hit_rate == 0.5
    assert monitor.loads == 1
    assert monitor.counts[SET] == 1


def test_zero_runtime_gives_zero_rates_not_an_error() -> None:
    clock = VirtualClock()  # never advanced: no time passes at all
    monitor = CacheMonitor(clock=clock)
    assert monitor.requests_per_second == 0.0
    for _ in range(5):
        monitor.record(event(HIT, "l1"))
    assert monitor.elapsed == 0.0
    assert monitor.requests_per_second == 0.0
    report = monitor.report()
    assert report["requests_per_s"] == 0.0 and report["source_calls_per_s"] == 0.0
    assert rate(5, 0.0) == 0.0 and rate(5, -1.0) == 0.0 and rate(5, 2.0) == 2.5
    clock.advance(2.0)
    assert monitor.requests_per_second == 2.5


def test_sliding_window_hit_rate_follows_the_clock() -> None:
    clock = VirtualClock()
    monitor = CacheMonitor(window=5.0, interval=1.0, clock=clock)
    for _ in range(10):
        monitor.record(event(HIT, "l1"))
    clock.advance(10.0)  # the hits are now 10 s old
    for _ in range(10):
        monitor.record(event(MISS, "source"))
    assert monitor.hit_rate == 0.5
    assert monitor.window_hit_rate() == 0.0
    assert monitor.window_hit_rate(window=20.0) == 0.5
    clock.advance(30.0)
    assert monitor.window_hit_rate() == 0.0  # nothing in the window: 0, not a division by 0


def test_time_series_has_one_row_per_interval() -> None:
    clock = VirtualClock()
    monitor = CacheMonitor(interval=0.5, clock=clock)
    monitor.record(event(HIT, "l1", 0.001))
    monitor.record(event(MISS, "source", 0.1))
    monitor.record(event(LOAD, "source", 0.1))
    clock.advance(1.2)  # interval 1 stays empty; interval 2 is in progress
    monitor.record(event(HIT, "l2", 0.002))
    series = monitor.series()
    assert series["t_s"].tolist() == [0.0, 0.5]
    assert series["requests"].tolist() == [2, 0]
    assert series["hit_rate"].iloc[0] == 0.5 and math.isnan(series["hit_rate"].iloc[1])
    assert series["source_calls_per_s"].iloc[0] == 2.0  # 1 load in 0.5 s
    assert series["l1_rate"].iloc[0] == 0.5 and series["source_rate"].iloc[0] == 0.5
    assert series["p99_ms"].iloc[0] == pytest.approx(100, rel=RESOLUTION)
    with_partial = monitor.series(partial=True)
    assert with_partial["requests"].tolist() == [2, 0, 1]
    assert monitor.series(last=0.5)["t_s"].tolist() == [0.5]


def test_history_is_bounded_even_after_a_long_silence() -> None:
    clock = VirtualClock()
    monitor = CacheMonitor(interval=1.0, history=10, clock=clock)
    monitor.record(event(HIT, "l1"))
    clock.advance(1e6)
    monitor.record(event(HIT, "l1"))
    assert len(monitor.series(partial=True)) == 10


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="interval"):
        CacheMonitor(interval=0)
    with pytest.raises(ValueError, match="at least one interval"):
        CacheMonitor(window=0.5, interval=1.0)


async def test_a_cold_run_is_0_percent_and_a_warm_run_100(
    redis: aioredis.Redis, namespace: str
) -> None:
    cache = MultiLevelCache(redis, namespace=namespace, backplane=False)
    monitor = CacheMonitor(cache)
    loader = Loader({"premium": 1})
    for i in range(50):
        await cache.get(f"policy:{i}", loader)
    assert (monitor.requests, monitor.hits, monitor.hit_rate) == (50, 0, 0.0)
    assert monitor.loads == loader.calls == 50
    monitor.reset()
    for i in range(50):
        await cache.get(f"policy:{i}", loader)
    assert monitor.hit_rate == 1.0 and monitor.served["l1"] == 50
    cache.clear_l1()
    await cache.get("policy:0", loader)
    assert monitor.served["l2"] == 1
    table = monitor.to_dataframe()
    assert table.loc["l1", "requests"] == 50 and table.loc["all", "requests"] == 51
    assert list(table.index) == ["l1", "l2", "source", "all"]
    assert table.loc["l1", "p50_ms"] < table.loc["l2", "p50_ms"]  # an L1 hit skips Redis


async def test_attach_detach_and_several_caches(redis: aioredis.Redis, namespace: str) -> None:
    a = MultiLevelCache(redis, namespace=namespace + "a:", backplane=False)
    b = MultiLevelCache(redis, namespace=namespace + "b:", backplane=False)
    monitor = CacheMonitor(a, b)
    monitor.attach(a)  # a second attach does not double-count
    await a.get("x", Loader(1))
    await b.get("x", Loader(2))
    assert monitor.requests == 2
    monitor.detach(a)
    await a.get("y", Loader(1))
    assert monitor.requests == 2
    with monitor:
        pass  # leaving the block detaches everything
    await b.get("y", Loader(1))
    assert monitor.requests == 2 and not a.events and not b.events


def test_recommendations_name_their_numbers_and_thresholds() -> None:
    clock = VirtualClock()
    monitor = CacheMonitor(clock=clock)
    for i in range(100):
        monitor.record(event(HIT, "l1", 0.0001) if i < 60 else event(MISS, "source", 0.2))
    monitor.record(CacheEvent(ERROR, "policy:1", "l2", 0.0, 0.0, "ConnectionError: refused"))
    found = {r.kind: r for r in monitor.recommendations()}
    assert set(found) == {"low_hit_rate", "high_latency", "errors"}
    assert found["low_hit_rate"].value == 0.6 and found["low_hit_rate"].threshold == 0.8
    assert "60.0% < 80%" in str(found["low_hit_rate"])
    assert "source" in found["high_latency"].message
    assert found["high_latency"].value == pytest.approx(200, rel=RESOLUTION)
    assert "ConnectionError" in found["errors"].message
    relaxed = monitor.recommendations(min_hit_rate=0.5, max_p99_ms=500, max_errors=1)
    assert relaxed == []
    assert CacheMonitor(clock=clock).recommendations() == []  # no data, no advice


async def test_l1_nearly_full_is_reported(redis: aioredis.Redis, namespace: str) -> None:
    cache = MultiLevelCache(redis, namespace=namespace, backplane=False, l1=Memory(10))
    monitor = CacheMonitor(cache)
    for i in range(9):
        await cache.get(f"k{i}", Loader(i))
    found = [r for r in monitor.recommendations(max_l1_fill=0.9) if r.kind == "l1_full"]
    assert len(found) == 1 and found[0].value == 0.9 and "9/10" in found[0].message
    assert monitor.report()["l1_fill"] == {namespace: "9/10"}
    assert [r.kind for r in monitor.recommendations(max_l1_fill=0.95)] == []


async def test_redis_down_counts_errors_and_fallbacks(fresh_server: RedisServer) -> None:
    client = aioredis.from_url(fresh_server.url)
    cache = MultiLevelCache(client, namespace="mon:", backplane=False)
    monitor = CacheMonitor(cache)
    fresh_server.kill()
    loader = Loader("v")
    assert await cache.get("k", loader) == "v"
    assert (monitor.misses, monitor.hits, monitor.errors, loader.calls) == (1, 0, 1, 1)
    assert [r.kind for r in monitor.recommendations(min_requests=1)] == ["low_hit_rate", "errors"]
    await client.aclose()
