"""Stampede prevention and stale serving, against the real redis-server the suite started.

Every test counts (loader calls, Redis keys, stats, events); none asserts a duration. Time is
an injected clock wherever expiry matters; a hang is an asyncio.Event that is never set.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import random
import signal
import sys
from collections.abc import Awaitable, Callable, Iterator

import pytest
import redis.asyncio as aioredis
from redis.exceptions import TimeoutError as RedisTimeoutError

from labcache.breaker import DEFAULT_OP_TIMEOUT, OPEN, CircuitBreaker, CircuitOpen, OperationTimeout
from labcache.embedded import RedisServer
from labcache.errors import LabcacheError, LoadTimeout
from labcache.events import EARLY_REFRESH, HIT, LOCK_WAIT, MISS, STALE, CacheEvent
from labcache.lab.data import InsuranceDB, Latency, SourceUnavailable
from labcache.lab.expiry_drill import ManualClock, expiry_drill
from labcache.multilevel import Memory, MultiLevelCache, Staleness, Stampede
from labcache.stampede import MISSING, DistributedLock, SingleFlight, XFetch, load_with_lock
from tests.helpers import Loader, command_counts, commands_sent


class Clock:
    """A clock the test moves by hand (seconds)."""

    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Gated:
    """A loader that counts its calls and waits for `gate` (never set: a hang)."""

    def __init__(self, value: object = "v", error: BaseException | None = None) -> None:
        self.value, self.error = value, error
        self.gate = asyncio.Event()
        self.calls = self.cancelled = 0

    async def __call__(self) -> object:
        self.calls += 1
        try:
            await self.gate.wait()
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        if self.error is not None:
            raise self.error
        return self.value


async def until(condition: Callable[[], Awaitable[bool]], timeout: float = 5.0) -> None:
    """Await a condition (polled), failing the test if it is not met in `timeout` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await condition():
        assert loop.time() < deadline, "condition not met in time"
        await asyncio.sleep(0.005)


def waiting_on(cache: MultiLevelCache, key: str, n: int) -> Callable[[], Awaitable[bool]]:
    """A condition: `n` requests are waiting on the one load of `key`."""

    async def condition() -> bool:
        return cache.waiting(key) == n

    return condition


def cache_for(redis: aioredis.Redis, namespace: str, **options: object) -> MultiLevelCache:
    return MultiLevelCache(redis, namespace=namespace, backplane=False, **options)  # type: ignore[arg-type]


def record_events(cache: MultiLevelCache) -> list[CacheEvent]:
    seen: list[CacheEvent] = []
    cache.events.subscribe(seen.append)
    return seen


# -- 1. single-flight in one process ---------------------------------------------------------


async def test_concurrent_misses_share_one_loader_call(
    redis: aioredis.Redis, namespace: str
) -> None:
    cache = cache_for(redis, namespace)
    loader = Gated({"premium": 1200})
    gets = [asyncio.create_task(cache.get("policy:1", loader)) for _ in range(100)]
    await until(waiting_on(cache, "policy:1", 100))
    loader.gate.set()
    values = await asyncio.gather(*gets)
    assert loader.calls == 1
    assert values == [{"premium": 1200}] * 100
    assert (cache.stats.misses, cache.stats.coalesced, cache.stats.loads) == (100, 99, 1)
    await cache.close()


async def test_single_flight_runs_once_for_a_hundred_callers() -> None:
    flight = SingleFlight()
    calls = 0
    gate = asyncio.Event()

    async def load() -> str:
        nonlocal calls
        calls += 1
        await gate.wait()
        return "v"

    runs = [asyncio.create_task(flight.run("k", load)) for _ in range(100)]
    await asyncio.sleep(0)  # joining needs no I/O: every caller is in after one loop turn
    gate.set()
    results = await asyncio.gather(*runs)
    assert calls == 1
    assert [shared for _, shared in results].count(False) == 1
    assert {value for value, _ in results} == {"v"}
    assert len(flight) == 0


async def test_without_single_flight_every_request_calls_the_source(
    redis: aioredis.Redis, namespace: str
) -> None:
    cache = cache_for(redis, namespace, stampede=Stampede(single_flight=False))
    loader = Gated()
    gets = [asyncio.create_task(cache.get("policy:1", loader)) for _ in range(100)]

    async def all_loading() -> bool:
        return loader.calls == 100  # nothing is stored while the gate is shut

    await until(all_loading)  # mistake 13: the stampede, every request at the source
    loader.gate.set()
    await asyncio.gather(*gets)
    assert loader.calls == 100


async def test_loader_error_reaches_every_waiter_and_nothing_is_cached(
    redis: aioredis.Redis, namespace: str
) -> None:
    cache = cache_for(redis, namespace)
    loader = Gated(error=SourceUnavailable("db down"))
    gets = [asyncio.create_task(cache.get("k", loader)) for _ in range(10)]
    await until(waiting_on(cache, "k", 10))
    loader.gate.set()
    results = await asyncio.gather(*gets, return_exceptions=True)
    assert loader.calls == 1
    assert all(isinstance(r, SourceUnavailable) for r in results)
    assert await redis.exists(cache.key("k")) == 0
    assert cache.in_flight == 0  # nothing kept per key


async def test_a_cancelled_waiter_does_not_cancel_the_load_for_the_others(
    redis: aioredis.Redis, namespace: str
) -> None:
    cache = cache_for(redis, namespace)
    loader = Gated("v")
    first = asyncio.create_task(cache.get("k", loader))
    await until(waiting_on(cache, "k", 1))
    second, third = (asyncio.create_task(cache.get("k", loader)) for _ in range(2))
    await until(waiting_on(cache, "k", 3))
    first.cancel()  # the caller that started the load goes away
    await until(waiting_on(cache, "k", 2))
    loader.gate.set()
    assert await asyncio.gather(second, third) == ["v", "v"]
    assert first.cancelled()
    assert (loader.calls, loader.cancelled) == (1, 0)
    assert await redis.exists(cache.key("k")) == 1


async def test_single_flight_forgets_keys_and_retrieves_errors_nobody_awaited() -> None:
    flight = SingleFlight()
    unhandled: list[object] = []
    asyncio.get_running_loop().set_exception_handler(lambda _loop, ctx: unhandled.append(ctx))
    gate = asyncio.Event()

    async def fails() -> str:
        await gate.wait()
        raise RuntimeError("boom")

    callers = [asyncio.create_task(flight.run("k", fails)) for _ in range(3)]
    await asyncio.sleep(0)
    assert len(flight) == 1
    for caller in callers:
        caller.cancel()  # every caller gives up; the run goes on
    await asyncio.gather(*callers, return_exceptions=True)
    gate.set()
    await flight.join()
    assert len(flight) == 0
    assert unhandled == []  # no "exception was never retrieved"
    ok = await asyncio.gather(
        *(flight.run(str(i % 3), lambda: asyncio.sleep(0, "x")) for i in range(9))
    )
    assert [shared for _, shared in ok].count(False) == 3
    assert len(flight) == 0


# -- 2. distributed lock across processes ----------------------------------------------------


async def test_lock_is_exclusive_and_only_its_token_releases_it(
    redis: aioredis.Redis, namespace: str
) -> None:
    lock = DistributedLock(redis, namespace, ttl=30)
    token = await lock.acquire("policy:1")
    assert token is not None and len(token) == 32
    assert await lock.acquire("policy:1") is None
    assert 29_000 < await redis.pttl(lock.key("policy:1")) <= 30_000
    assert await lock.release("policy:1", "not-the-token") is False
    assert await redis.get(lock.key("policy:1")) == token.encode()
    assert await lock.release("policy:1", token) is True
    assert await redis.exists(lock.key("policy:1")) == 0
    assert (lock.stats.acquired, lock.stats.lost) == (1, 1)


async def test_release_wakes_a_waiter_through_pubsub(redis: aioredis.Redis, namespace: str) -> None:
    lock = DistributedLock(redis, namespace, poll_interval=60)  # polling would take a minute
    token = await lock.acquire("k")
    assert token is not None
    waiter = asyncio.create_task(lock.acquire_or_wait("k", timeout=60))

    async def subscribed() -> bool:
        return dict(await redis.pubsub_numsub(lock.channel))[lock.channel.encode()] >= 1

    await until(subscribed)
    await lock.release("k", token)
    outcome = await waiter
    assert (outcome.token, outcome.waited, outcome.timed_out) == (None, True, False)
    assert (lock.stats.waits, lock.stats.notified, lock.stats.takeovers) == (1, 1, 0)
    await lock.close()
    assert dict(await redis.pubsub_numsub(lock.channel))[lock.channel.encode()] == 0


async def test_waiters_on_a_lock_whose_holder_died_let_exactly_one_take_over(
    redis: aioredis.Redis, namespace: str
) -> None:
    """A 'dead holder' set the lock with a short PX and never releases: one waiter loads."""
    await redis.set(f"{namespace}__lock__:policy:1", "dead-holder", px=200)
    loader = Loader({"premium": 1200})
    caches = [
        cache_for(
            redis,
            namespace,
            stampede=Stampede(
                lock=DistributedLock(redis, namespace, wait_timeout=10, poll_interval=0.02)
            ),
        )
        for _ in range(5)  # five instances, as if five processes
    ]
    values = await asyncio.gather(*(c.get("policy:1", loader) for c in caches))
    assert values == [{"premium": 1200}] * 5
    assert loader.calls == 1
    # One took over the expired lock; a waiter whose poll beats the release message to its
    # mailbox also "takes over", then finds the value stored and does not load.
    assert sum(c.stampede_stats.lock_takeovers for c in caches) >= 1
    assert sum(c.stampede_stats.lock_timeouts for c in caches) == 0
    assert sum(c.stats.misses for c in caches) == 1
    assert sum(c.stats.l2_hits for c in caches) == 4  # the others re-read Redis when woken
    assert await redis.exists(f"{namespace}__lock__:policy:1") == 0
    for cache in caches:
        await cache.close()


async def test_a_waiter_that_times_out_loads_itself_and_says_so(
    redis: aioredis.Redis, namespace: str
) -> None:
    await redis.set(f"{namespace}__lock__:k", "stuck-holder", px=60_000)
    lock = DistributedLock(redis, namespace, wait_timeout=0.05, poll_interval=0.01)
    cache = cache_for(redis, namespace, stampede=Stampede(lock=lock))
    events = record_events(cache)
    loader = Loader("v")
    assert await cache.get("k", loader) == "v"
    assert loader.calls == 1
    assert (cache.stampede_stats.lock_waits, cache.stampede_stats.lock_timeouts) == (1, 1)
    assert [(e.kind, e.detail) for e in events if e.kind == LOCK_WAIT] == [(LOCK_WAIT, "timed out")]
    assert lock.stats.timeouts == 1
    await cache.close()


async def test_lock_ttl_follows_the_last_load_time(redis: aioredis.Redis, namespace: str) -> None:
    clock = Clock()
    lock = DistributedLock(redis, namespace, ttl=30, ttl_factor=4, min_ttl=0.1)
    assert lock.ttl_for(None) == 30 and lock.ttl_for(0.5) == 2.0 and lock.ttl_for(0.01) == 0.1
    cache = cache_for(
        redis,
        namespace,
        stampede=Stampede(lock=lock),
        staleness=Staleness(grace=100, soft_timeout=5),
        clock=clock,
    )
    seen: list[int] = []

    async def slow_load() -> str:  # "takes" 0.3 s on the cache clock
        clock.now += 0.3
        return "v1"

    async def watching_load() -> str:
        seen.append(await redis.pttl(lock.key("k")))
        return "v2"

    await cache.get("k", slow_load, ttl=10)  # unknown load time: the default lock TTL
    clock.now += 11  # expired, within grace: the refresh knows the last load took 0.3 s
    assert await cache.get("k", watching_load, ttl=10, skip_memory=True) == "v2"
    assert len(seen) == 1 and 1000 < seen[0] <= 1200  # 4 x 0.3 s
    await cache.close()


WORKER = r"""
import asyncio, json, sys
import redis.asyncio as aioredis
from labcache.multilevel import MultiLevelCache, Stampede
from labcache.stampede import DistributedLock

async def main(url, ns, use_lock, requests):
    redis = aioredis.from_url(url)
    lock = DistributedLock(redis, ns, wait_timeout=20, poll_interval=0.02) if use_lock else None
    cache = MultiLevelCache(redis, namespace=ns, backplane=False, stampede=Stampede(lock=lock))

    async def loader():
        await redis.incr(ns + "source_calls")  # each process has its own DB object: count here
        await asyncio.sleep(0.3)
        return {"premium": 1200}

    await redis.incr(ns + "ready")
    await redis.blpop([ns + "go"], timeout=60)  # start together
    values = await asyncio.gather(*(cache.get("policy:12345", loader) for _ in range(requests)))
    await cache.close()
    print(json.dumps({"ok": all(v == {"premium": 1200} for v in values),
                      **cache.stampede_stats.as_dict()}))
    await redis.aclose()

asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3] == "1", int(sys.argv[4])))
"""


async def run_processes(
    redis: aioredis.Redis, url: str, namespace: str, *, lock: bool, processes: int = 4
) -> tuple[int, list[dict[str, int]]]:
    """`processes` OS processes x 25 requests for one cold key: (source calls, their stats)."""
    args = (url, namespace, "1" if lock else "0", "25")
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable, "-c", WORKER, *args, stdout=asyncio.subprocess.PIPE
        )
        for _ in range(processes)
    ]

    async def all_ready() -> bool:
        return int(await redis.get(namespace + "ready") or 0) == processes

    await until(all_ready, timeout=60)
    await redis.rpush(namespace + "go", *["go"] * processes)
    outputs = [json.loads((await p.communicate())[0]) for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert all(o.pop("ok") for o in outputs)
    return int(await redis.get(namespace + "source_calls") or 0), outputs


@pytest.mark.slow
async def test_lock_allows_at_most_one_load_across_processes(
    redis: aioredis.Redis, redis_url: str, namespace: str
) -> None:
    calls, stats = await run_processes(redis, redis_url, namespace + "lock:", lock=True)
    assert calls == 1
    # At most one waiter per other process (single-flight within each); a process that starts
    # after the value is stored reads it from Redis and never waits.
    assert sum(s["lock_waits"] for s in stats) <= 3
    assert sum(s["lock_timeouts"] for s in stats) == 0
    unprotected, _ = await run_processes(redis, redis_url, namespace + "nolock:", lock=False)
    assert 1 <= unprotected <= 4  # one per process at most (single-flight), usually all four


# -- 3. XFetch: probabilistic early expiration -----------------------------------------------


def test_xfetch_follows_the_formula_with_a_seeded_rng() -> None:
    xfetch = XFetch(beta=2.0, rng=random.Random(7))
    twin = random.Random(7)
    for _ in range(100):
        expected = 500.0 + 3.0 * 2.0 * math.log(1.0 - twin.random())
        assert xfetch.refresh_at(500.0, 3.0) == pytest.approx(expected)
    assert XFetch(beta=0).refresh_at(500.0, 3.0) == 500.0  # beta 0: never early
    assert XFetch().refresh_at(500.0, 0.0) == 500.0  # unknown load time: never early
    one_delta_before = XFetch(rng=random.Random(1))
    fired = sum(one_delta_before.should_refresh(99.0, 100.0, 1.0) for _ in range(20_000))
    assert abs(fired / 20_000 - math.exp(-1)) < 0.015  # P(-ln U >= 1) = 1/e
    with pytest.raises(ValueError, match="beta"):
        XFetch(beta=-1)


async def steady_reads(
    cache: MultiLevelCache, clock: Clock, *, rate: float, seconds: float, ttl: float
) -> int:
    """Sequential reads at `rate`/s on the injected clock; each load 'takes' 1 s of it."""
    loads = 0

    async def loader() -> int:
        nonlocal loads
        loads += 1
        clock.now += 1.0
        return loads

    start = clock.now
    for i in range(int(rate * seconds)):
        clock.now = max(clock.now, start + i / rate)
        await cache.get("hot", loader, ttl=ttl)
        await cache.loads.refreshes.join()  # a background refresh, if one started, runs now
    return loads


@pytest.mark.parametrize("skip_l1", [False, True])
async def test_xfetch_refreshes_early_and_serves_no_miss_at_expiry(
    redis: aioredis.Redis, namespace: str, skip_l1: bool
) -> None:
    clock = Clock()
    memory_ttl = 0.001 if skip_l1 else 5.0
    xfetch = cache_for(
        redis,
        namespace,
        l1=Memory(ttl=memory_ttl, clock=clock),
        stampede=Stampede(early_refresh=1.0, rng=random.Random(3)),
        clock=clock,
    )
    loads = await steady_reads(xfetch, clock, rate=20, seconds=60, ttl=10)
    assert xfetch.stats.misses == 1  # the warm-up only: no request waited for the source
    assert xfetch.stampede_stats.early_refreshes == loads - 1 >= 5  # ~one per 10 s period
    plain_clock = Clock()
    plain = cache_for(
        redis, namespace + "plain:", l1=Memory(ttl=memory_ttl, clock=plain_clock), clock=plain_clock
    )
    plain_loads = await steady_reads(plain, plain_clock, rate=20, seconds=60, ttl=10)
    assert plain.stats.misses == plain_loads >= 5  # every expiry is a miss without it
    assert plain.stampede_stats.early_refreshes == 0


@pytest.mark.parametrize("single_flight", [True, False])
async def test_xfetch_behind_l1_refreshes_before_readers_wait(
    redis: aioredis.Redis, namespace: str, single_flight: bool
) -> None:
    """Issue 18: with L1 on, L1 hits draw too, so the refresh starts well before expiry.

    100 readers per load time δ keep arriving while loads run (expiry_drill). Before the fix,
    25-58 % of expiries had readers waiting and the refresh started a median 0.6-1.25 δ early.
    """
    clock = ManualClock()
    cache = cache_for(
        redis,
        namespace,
        l1=Memory(ttl=60, clock=clock),
        stampede=Stampede(single_flight=single_flight, early_refresh=1.0, rng=random.Random(5)),
        clock=clock,
    )
    commands_before = await command_counts(redis)
    result = await expiry_drill([cache], clock, readers_per_delta=100, ttl=20, expiries=20)
    sent = await commands_sent(redis, commands_before)
    assert result.expiries >= 20
    assert result.share_waited <= 0.05
    assert result.recomputations == 1 if single_flight else result.recomputations <= math.e
    assert sorted(result.lead)[len(result.lead) // 2] > 3  # ln(100) = 4.6 δ for the paper's rule
    assert cache.stats.l1_hits > 0.99 * result.reads  # the draws were made on L1 hits...
    assert sum(sent.values()) < 10 * (result.loads + result.expiries + 2)  # ...with no command
    await cache.close()


async def test_instances_built_with_defaults_draw_independently(
    redis: aioredis.Redis, namespace: str
) -> None:
    """Issue 18: XFetch's default rng was Random(0): a fleet made the same draws together."""
    assert [XFetch().refresh_at(100.0, 1.0) for _ in range(2)] != [
        XFetch().refresh_at(100.0, 1.0) for _ in range(2)
    ]
    # Each reader on its own instance (51 of them): with independent draws about e^(1/β)
    # loads per expiry (8 runs: mean 2.68, sd 0.3); with the old seeded default, 30-50.
    clock = ManualClock()
    fleet = [
        cache_for(redis, namespace, stampede=Stampede(early_refresh=1.0), clock=clock)
        for _ in range(51)
    ]
    result = await expiry_drill(fleet, clock, readers_per_delta=50, ttl=20, expiries=30)
    assert result.expiries >= 30
    assert result.recomputations <= 2 * math.e
    # Four instances sharing the readers: about 2 on average (20 runs of 25 expiries: 1.98,
    # sd 0.27), at most e^(1/β); one instance alone: exactly 1. 60 expiries keep e 4 sd away.
    clock = ManualClock()
    four = [
        cache_for(redis, namespace + "4:", stampede=Stampede(early_refresh=1.0), clock=clock)
        for _ in range(4)
    ]
    result = await expiry_drill(four, clock, readers_per_delta=100, ttl=20, expiries=60)
    assert 1 <= result.recomputations <= math.e
    for cache in (*fleet, *four):
        await cache.close()


async def test_early_refresh_runs_once_in_background_while_the_old_value_is_served(
    redis: aioredis.Redis, namespace: str
) -> None:
    clock = Clock()
    cache = cache_for(
        redis, namespace, stampede=Stampede(early_refresh=1000.0, rng=random.Random(1)), clock=clock
    )
    events = record_events(cache)

    async def first() -> str:
        clock.now += 0.5
        return "old"

    await cache.get("k", first, ttl=60)
    clock.now += 30  # far from expiry, but beta 1000 x 0.5 s makes the refresh certain
    refresh = Gated("new")
    values = await asyncio.gather(*(cache.get("k", refresh, skip_memory=True) for _ in range(20)))
    assert values == ["old"] * 20  # nobody waited
    assert (refresh.calls, cache.stampede_stats.early_refreshes) == (1, 1)
    assert [e.kind for e in events].count(EARLY_REFRESH) == 1
    refresh.gate.set()
    await cache.loads.refreshes.join()
    assert await cache.get("k", refresh, skip_memory=True) == "new"
    assert refresh.calls == 1
    await cache.close()


# -- 4. stale-while-revalidate and fail-safe -------------------------------------------------


async def test_within_grace_stale_is_served_at_once_and_refreshed_once(
    redis: aioredis.Redis, namespace: str
) -> None:
    clock = Clock()
    cache = cache_for(redis, namespace, staleness=Staleness(grace=5), clock=clock)
    events = record_events(cache)
    await cache.get("k", Loader("v1"), ttl=10)
    assert 14_000 < await redis.pttl(cache.key("k")) <= 15_000  # PX = ttl + grace
    clock.now += 11  # logically expired, kept by Redis for the grace period
    refresh = Gated("v2")
    values = await asyncio.gather(*(cache.get("k", refresh, ttl=10) for _ in range(10)))
    assert values == ["v1"] * 10
    assert refresh.calls == 1
    stale = [e for e in events if e.kind == STALE]
    assert len(stale) == 10 and {e.detail for e in stale} == {"revalidating"}
    assert cache.stampede_stats.stale_served == 10
    refresh.gate.set()
    await cache.loads.refreshes.join()
    assert await cache.get("k", refresh, ttl=10) == "v2"
    assert events[-1].kind == HIT and refresh.calls == 1
    clock.now += 16  # past ttl + grace of the new entry too: a plain miss
    assert await cache.get("k", Loader("v3")) == "v3"
    assert events[-1].kind == MISS


async def test_fail_safe_serves_stale_when_the_loader_raises(
    redis: aioredis.Redis, namespace: str
) -> None:
    clock = Clock()
    cache = cache_for(redis, namespace, staleness=Staleness(grace=60, soft_timeout=5), clock=clock)
    events = record_events(cache)
    await cache.get("k", Loader("v1"), ttl=10)
    clock.now += 11
    failing = Loader(error=SourceUnavailable("insurance database unavailable"))
    assert await cache.get("k", failing) == "v1"  # no error reaches the caller
    assert failing.calls == 1
    assert cache.stampede_stats.refresh_errors == 1
    assert events[-1].kind == STALE and events[-1].detail == "refresh failed: SourceUnavailable"
    await cache.close()


async def test_fail_safe_serves_stale_when_the_loader_hangs(
    redis: aioredis.Redis, namespace: str
) -> None:
    clock = Clock()
    cache = cache_for(
        redis, namespace, staleness=Staleness(grace=60, soft_timeout=0.01), clock=clock
    )
    events = record_events(cache)
    await cache.get("k", Loader("v1"), ttl=10)
    clock.now += 11
    hang = Gated("never")  # its gate is never set
    assert await cache.get("k", hang) == "v1"
    assert await cache.get("k", hang) == "v1"
    assert hang.calls == 1  # the second read joined the refresh still in flight
    assert cache.stampede_stats.soft_timeouts == 2
    assert [e.detail for e in events if e.kind == STALE] == ["soft timeout"] * 2
    assert len(cache.loads.refreshes) == 1
    await cache.close()  # background refreshes are cancelled, not leaked (mistake 10)
    assert len(cache.loads.refreshes) == 0 and hang.cancelled == 1


async def test_hard_timeout_bounds_the_wait_when_nothing_stale_exists(
    redis: aioredis.Redis, namespace: str
) -> None:
    cache = cache_for(redis, namespace, stampede=Stampede(hard_timeout=0.01))
    hang = Gated("never")
    with pytest.raises(LoadTimeout, match=r"'k': no value within hard_timeout=0.01s") as first:
        await cache.get("k", hang)
    with pytest.raises(asyncio.TimeoutError):  # a LoadTimeout is an asyncio.TimeoutError too
        await cache.get("k", hang)
    assert isinstance(first.value, TimeoutError) and isinstance(first.value, LabcacheError)
    assert hang.calls == 1  # the load goes on once, shared
    assert cache.stampede_stats.hard_timeouts == 2
    await cache.close()
    assert hang.cancelled == 1


async def test_database_outage_is_served_from_stale(redis: aioredis.Redis, namespace: str) -> None:
    clock = Clock()
    db = InsuranceDB(latency=Latency.zero())
    cache = cache_for(redis, namespace, staleness=Staleness(grace=300, soft_timeout=1), clock=clock)
    policy = await cache.get("policy:12345", lambda: db.get_policy(12345), ttl=60)
    clock.now += 61
    with db.outage():
        for _ in range(3):
            assert await cache.get("policy:12345", lambda: db.get_policy(12345)) == policy
    assert cache.stampede_stats.stale_served == 3
    assert db.calls["get_policy"] == 4  # the first load and one refresh attempt per read
    without = cache_for(redis, namespace + "nograce:", clock=clock)
    await without.get("policy:12345", lambda: db.get_policy(12345), ttl=60)
    clock.now += 61
    with db.outage(), pytest.raises(SourceUnavailable):
        await without.get("policy:12345", lambda: db.get_policy(12345))
    await cache.close()


async def test_an_l1_hit_sends_nothing_to_redis_with_every_option_on(
    redis: aioredis.Redis, namespace: str
) -> None:
    lock = DistributedLock(redis, namespace)
    cache = cache_for(
        redis,
        namespace,
        stampede=Stampede(lock=lock, early_refresh=1.0, hard_timeout=5),
        staleness=Staleness(grace=30, sliding=True),
    )
    await cache.get("k", Loader("v"), ttl=60)
    before = await command_counts(redis)
    for _ in range(50):
        assert await cache.get("k", Loader("other")) == "v"
    assert await commands_sent(redis, before) == {}
    assert cache.stats.l1_hits == 50
    await cache.close()


async def test_options_are_validated(redis: aioredis.Redis, namespace: str) -> None:
    with pytest.raises(ValueError, match="grace"):
        cache_for(redis, namespace, staleness=Staleness(grace=-1))
    with pytest.raises(ValueError, match="hard_timeout"):
        cache_for(redis, namespace, stampede=Stampede(hard_timeout=0))
    with pytest.raises(ValueError, match="wait_timeout"):
        DistributedLock(redis, namespace, wait_timeout=float("nan"))
    with pytest.raises(ValueError, match="soft_timeout"):
        Staleness(soft_timeout="1")  # type: ignore[arg-type]
    cache = cache_for(redis, namespace)
    with pytest.raises(TypeError, match="staleness must be a Staleness"):
        await cache.get("k", Loader(), staleness=5)  # type: ignore[arg-type]


# -- 6. the lock's Redis calls are guarded (issue 16) ----------------------------------------

# Only keeps a lock that ignores its op_timeout from hanging the suite; not the bound under test.
SAFETY = 10.0


@contextlib.contextmanager
def paused(server: RedisServer) -> Iterator[None]:
    """SIGSTOP the server: it still accepts connections, and answers nothing, until SIGCONT."""
    assert server.process is not None
    pid = server.process.pid
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


async def _nothing_stored() -> object:
    return MISSING


async def test_lock_calls_give_up_after_op_timeout_on_a_paused_server(
    fresh_server: RedisServer, namespace: str
) -> None:
    client = aioredis.from_url(fresh_server.url)  # no socket timeout: only op_timeout bounds it
    breaker = CircuitBreaker(failure_threshold=2, reset_timeout=60)
    lock = DistributedLock(client, namespace, op_timeout=0.2, breaker=breaker)
    token = await lock.acquire("held")
    assert token is not None
    try:
        with paused(fresh_server):
            with pytest.raises(OperationTimeout):
                await asyncio.wait_for(lock.acquire("policy:1"), SAFETY)
            with pytest.raises(OperationTimeout):
                await asyncio.wait_for(lock.release("held", token), SAFETY)
            assert breaker.state == OPEN and breaker.stats.timeouts == 2
            with pytest.raises(CircuitOpen):
                await lock.acquire("policy:1")  # refused at once: nothing sent
            loader = Loader("from the source")
            got = await asyncio.wait_for(
                load_with_lock(lock, "policy:1", loader, _nothing_stored), SAFETY
            )
            assert got == ("from the source", True) and loader.calls == 1  # loaded without it
        breaker.reset()
        assert await lock.acquire("after") is not None  # the server answers again
    finally:
        await lock.close()
        await client.aclose()


async def test_lock_without_op_timeout_waits_for_the_clients_own_timeout(
    fresh_server: RedisServer, namespace: str
) -> None:
    client = aioredis.from_url(fresh_server.url, socket_timeout=0.2)
    lock = DistributedLock(client, namespace, op_timeout=None)
    assert await client.ping()  # connected before the pause
    try:
        with paused(fresh_server), pytest.raises(RedisTimeoutError) as raised:
            await asyncio.wait_for(lock.acquire("policy:1"), SAFETY)
        assert not isinstance(raised.value, OperationTimeout)  # redis-py's, not ours
    finally:
        await lock.close()
        await client.aclose()


async def test_lock_guard_options_are_validated(redis: aioredis.Redis, namespace: str) -> None:
    assert DistributedLock(redis, namespace).op_timeout == DEFAULT_OP_TIMEOUT
    assert DistributedLock(redis, namespace, op_timeout=None).op_timeout is None
    for bad in (0, -1, math.nan, math.inf, True, "1"):
        with pytest.raises(ValueError, match="op_timeout"):
            DistributedLock(redis, namespace, op_timeout=bad)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="breaker must be a CircuitBreaker or None"):
        DistributedLock(redis, namespace, breaker=True)  # type: ignore[arg-type]
