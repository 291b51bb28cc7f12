"""Workload (Part 5): seeded streams, open-loop schedules, per-request levels, clean stops."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Callable

import pytest
import redis.asyncio as aioredis

from labcache.embedded import RedisServer
from labcache.lab.data import InsuranceDB, Latency
from labcache.lab.workload import (
    RequestStream,
    VirtualClock,
    Workload,
    lab_quote_requests,
    summarize,
)
from labcache.monitor import CacheMonitor
from labcache.multilevel import Memory, MultiLevelCache


async def until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    """Await a condition the event loop will make true (fails the test after `timeout` s)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        assert loop.time() < deadline, f"condition still false after {timeout} s"
        await asyncio.sleep(0.001)


class Gate:
    """An injected `sleep` for InsuranceDB: every source call waits until the gate opens."""

    def __init__(self) -> None:
        self.open = asyncio.Event()
        self.waiting = 0

    async def __call__(self, _seconds: float) -> None:
        self.waiting += 1
        await self.open.wait()


@pytest.fixture(scope="module")
def db() -> InsuranceDB:
    return InsuranceDB(latency=Latency.zero())


@pytest.fixture
async def cache(redis: aioredis.Redis, namespace: str) -> AsyncIterator[MultiLevelCache]:
    async with MultiLevelCache(redis, namespace=namespace, backplane=False) as cache:
        yield cache


def sequence(stream: RequestStream, n: int) -> list[tuple[str, str]]:
    return [(r.kind, r.key) for r in stream.take(n)]


def test_the_same_seed_gives_the_same_requests(db: InsuranceDB) -> None:
    one = sequence(RequestStream.from_db(db, skew=1.1, seed=7), 500)
    assert one == sequence(RequestStream.from_db(db, skew=1.1, seed=7), 500)
    assert one != sequence(RequestStream.from_db(db, skew=1.1, seed=8), 500)


def test_the_lab_mix_and_zipf_skew(db: InsuranceDB) -> None:
    stream = RequestStream.from_db(db, n_keys=100, seed=1)
    requests = stream.take(20_000)
    kinds = Counter(r.kind for r in requests)
    for kind, share in {"policy": 0.6, "customer": 0.3, "quote": 0.1}.items():
        assert kinds[kind] / 20_000 == pytest.approx(share, abs=0.02)
    uniform = Counter(r.key for r in requests if r.kind == "policy")
    assert max(uniform.values()) < 2 * min(uniform.values())  # ~120 each
    stream.skew = 1.2
    skewed = Counter(r.key for r in stream.take(20_000) if r.kind == "policy")
    hottest = f"policy:{db.policy_ids()[0]}"
    assert skewed.most_common(1)[0][0] == hottest
    assert skewed[hottest] / sum(skewed.values()) > 0.2  # 1 / H(100, 1.2) = 0.25
    stream.mix = {"quote": 1}
    assert {r.kind for r in stream.take(50)} == {"quote"}
    assert len({r.key for r in RequestStream.from_db(db, mix={"quote": 1}).take(5000)}) == 80


def test_bad_knobs_are_refused(db: InsuranceDB, cache: MultiLevelCache) -> None:
    with pytest.raises(ValueError, match="rate"):
        Workload(cache, db, rate=0)
    with pytest.raises(ValueError, match="skew"):
        Workload(cache, db, skew=-1)
    with pytest.raises(ValueError, match="without ids"):
        Workload(cache, db, mix={"agent": 1.0})
    with pytest.raises(ValueError, match="positive sum"):
        Workload(cache, db, mix={"policy": 0})
    with pytest.raises(ValueError, match="ttl policy"):
        Workload(cache, db, ttls={"policy": 0})
    wl = Workload(cache, db)
    with pytest.raises(ValueError, match="rate"):
        wl.rate = float("inf")
    assert len(lab_quote_requests()) == 80


async def test_simulated_runs_repeat_to_the_request(
    redis: aioredis.Redis, namespace: str, db: InsuranceDB
) -> None:
    frames = []
    for run in range(2):
        clock = VirtualClock()
        cache = MultiLevelCache(
            redis,
            namespace=f"{namespace}{run}:",
            default_ttl=3,
            backplane=False,
            l1=Memory(ttl=1, clock=clock),
            clock=clock,
        )
        wl = Workload(cache, db, rate=20, requests=400, skew=1.0, n_keys=50, seed=3)
        frames.append(await wl.simulate(clock))
    a, b = frames
    columns = ["scheduled_s", "kind", "key", "level", "source_called"]
    assert a[columns].equals(b[columns])
    counts = summarize(a)
    assert counts["l1"] > 0 and counts["l2"] > 0 and counts["source"] > 0
    assert counts["source"] == counts["source_calls"]  # sequential: nothing to coalesce
    assert a["scheduled_s"].iloc[-1] == pytest.approx(399 / 20)


async def test_each_request_records_the_level_that_served_it(
    redis: aioredis.Redis, namespace: str, db: InsuranceDB
) -> None:
    clock = VirtualClock()
    cache = MultiLevelCache(redis, namespace=namespace, backplane=False, clock=clock)
    wl = Workload(cache, db, rate=10, requests=60, n_keys=10, seed=2, ttls={"policy": 7})
    frame = await wl.simulate(clock)
    first = ~frame["key"].duplicated()
    assert (frame.loc[first, "level"] == "source").all() and frame.loc[first, "source_called"].all()
    assert (frame.loc[~first, "level"] == "l1").all()  # every TTL outlives the 6 s run
    assert frame["source_called"].sum() == first.sum()
    policy_key = frame.loc[frame["kind"] == "policy", "key"].iloc[0]
    assert 6_000 < await cache.redis.pttl(cache.key(policy_key)) <= 7_000


async def test_open_loop_issues_on_schedule_while_earlier_requests_are_stuck(
    cache: MultiLevelCache,
) -> None:
    gate = Gate()
    db = InsuranceDB(sleep=gate)
    wl = Workload(cache, db, rate=200, requests=20, seed=4)
    wl.start()
    # Every source call blocks until the gate opens, yet all 20 requests get issued.
    await until(lambda: wl.issued == 20 and wl.in_flight == 20)
    await until(lambda: all(r.start == r.start for r in wl.records))  # all started (no NaN)
    frame = wl.frame()
    assert frame["latency_ms"].isna().all()  # none has finished: nobody waited for a reply
    gate.open.set()
    frame = await wl.run()
    assert frame["scheduled_s"].tolist() == pytest.approx([i / 200 for i in range(20)])
    assert (frame["start_s"] >= frame["scheduled_s"]).all()  # never early
    assert frame["start_s"].is_monotonic_increasing
    assert (frame["level"] == "source").all() and frame["error"].eq("").all()
    # One source call per distinct key: the rest joined a call in flight (single-flight).
    assert frame["source_called"].sum() == db.total_calls == frame["key"].nunique()


async def test_knobs_change_while_running(cache: MultiLevelCache, db: InsuranceDB) -> None:
    wl = Workload(cache, db, rate=100, requests=40, seed=5)
    wl.start()
    await until(lambda: wl.issued >= 10)
    wl.rate = 400
    frame = await wl.run()
    gaps = frame["scheduled_s"].diff().dropna().round(6).tolist()
    assert set(gaps) == {0.01, 0.0025}
    assert gaps == sorted(gaps, reverse=True)  # once changed, every later gap is the new one
    assert gaps.count(0.0025) >= 20


async def test_stop_leaves_no_task_running(cache: MultiLevelCache, db: InsuranceDB) -> None:
    before = asyncio.all_tasks()
    wl = Workload(cache, db, rate=500, seed=6)  # unbounded: runs until stopped
    wl.start()
    await until(lambda: wl.issued >= 20)
    frame = await wl.stop()
    assert not wl.running and wl.in_flight == 0
    assert asyncio.all_tasks() - before == set()
    assert not cache.events  # the workload's listener is gone
    assert len(frame) == wl.issued and frame["level"].ne("").all()
    issued = wl.issued
    await asyncio.sleep(0.05)
    assert wl.issued == issued  # nothing issues after stop()


async def test_stop_cancels_requests_that_do_not_drain(cache: MultiLevelCache) -> None:
    gate = Gate()
    db = InsuranceDB(sleep=gate)
    before = asyncio.all_tasks()
    wl = Workload(cache, db, rate=1000, seed=7)
    wl.start()
    await until(lambda: wl.issued >= 5)
    frame = await wl.stop(drain_timeout=0.01)
    assert not wl.running and wl.in_flight == 0
    assert (frame["error"] == "cancelled").all()
    # Only the cache's own shared loads are left; they end when the source answers.
    gate.open.set()
    await until(lambda: not (asyncio.all_tasks() - before))


async def test_a_bounded_run_by_duration_ends_by_itself(
    cache: MultiLevelCache, db: InsuranceDB
) -> None:
    before = asyncio.all_tasks()
    frame = await Workload(cache, db, rate=400, duration=0.05, seed=8).run()
    assert len(frame) == 20  # scheduled at 0, 2.5, ... 47.5 ms
    assert asyncio.all_tasks() - before == set()


async def test_source_errors_are_recorded_and_the_run_goes_on(cache: MultiLevelCache) -> None:
    db = InsuranceDB(latency=Latency.zero())
    wl = Workload(cache, db, rate=1000, requests=10, seed=9)
    with db.outage():
        frame = await wl.run()
    assert len(frame) == 10
    assert frame["error"].str.startswith("SourceUnavailable").all()
    assert summarize(frame)["errors"] == 10


async def test_redis_going_down_mid_run_falls_back_to_the_source(
    fresh_server: RedisServer, db: InsuranceDB
) -> None:
    client = aioredis.from_url(fresh_server.url)
    cache = MultiLevelCache(client, namespace="wl:", backplane=False)
    monitor = CacheMonitor(cache)
    wl = Workload(cache, db, rate=500, requests=60, n_keys=5, seed=10)
    wl.start()
    await until(lambda: wl.issued >= 20)
    fresh_server.kill()  # SIGKILL, and waits until the process is gone
    killed_at = wl.issued
    frame = await wl.run()
    assert len(frame) == 60 and frame["error"].eq("").all()  # every request was answered
    after = frame.iloc[killed_at:]
    assert after["level"].isin(["l1", "source"]).all()  # L1 copies, or the source directly
    # Fallbacks once Redis is gone; errors for the calls that failed (an open circuit breaker
    # then skips Redis without another error, so there can be fewer errors than fallbacks).
    assert monitor.counts["fallback"] > 0 and monitor.errors > 0
    await client.aclose()
