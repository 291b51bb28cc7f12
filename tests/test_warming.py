"""CacheWarmer (Part 3): pipelined, bounded, skips what is cached, survives a failing loader."""

from __future__ import annotations

import asyncio
import math
import os
import random
import signal
from collections import Counter

import pytest
import redis.asyncio as aioredis
from redis import exceptions as redis_exceptions

from labcache import entry
from labcache.connection import Settings
from labcache.embedded import RedisServer
from labcache.lab.data import InsuranceDB, Latency
from labcache.lab.plans import lab_plan, lab_plans
from labcache.multilevel import Guard, MultiLevelCache, Stampede
from labcache.ttl import Jitter
from labcache.warming import CacheWarmer, top_keys
from tests.helpers import Loader, command_counts, commands_sent


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Source:
    """`loader_for(key)`: counts calls per key, fails for the keys it is told to."""

    def __init__(self, fail: frozenset[str] = frozenset(), value: str = "v") -> None:
        self.fail = fail
        self.value = value
        self.calls: Counter[str] = Counter()

    async def __call__(self, key: str) -> object:
        self.calls[key] += 1
        await asyncio.sleep(0)  # a real await, like a database call
        if key in self.fail:
            raise RuntimeError(f"no row for {key}")
        return {"key": key, "v": self.value}


def keys(n: int, prefix: str = "policy:") -> list[str]:
    return [f"{prefix}{i}" for i in range(n)]


@pytest.fixture
def cache(redis: aioredis.Redis, namespace: str) -> MultiLevelCache:
    return MultiLevelCache(redis, namespace=namespace, backplane=False)


async def test_one_failing_loader_does_not_stop_the_rest(cache: MultiLevelCache) -> None:
    source = Source(fail=frozenset({"policy:3"}))
    result = await CacheWarmer(cache, progress=False).warm(keys(10), source, ttl=60)
    assert (result.warmed, result.skipped) == (9, 0)
    assert result.failed == {"policy:3": "RuntimeError: no row for policy:3"}
    assert result.total == 10 and sum(source.calls.values()) == 10
    assert await cache.redis.exists(*(cache.key(k) for k in keys(10))) == 9
    # Every warmed key is an L1 hit now, with no loader call.
    nobody = Loader("never")
    assert await cache.get("policy:7", nobody) == {"key": "policy:7", "v": "v"}
    assert nobody.calls == 0 and cache.stats.l1_hits == 1


async def test_records_match_what_the_cache_itself_writes(
    redis: aioredis.Redis, cache: MultiLevelCache, namespace: str
) -> None:
    await CacheWarmer(cache, progress=False).warm(keys(3), Source(), ttl=120)
    reader = MultiLevelCache(redis, namespace=namespace, backplane=False)  # empty L1
    assert await reader.get("policy:1", Loader("never")) == {"key": "policy:1", "v": "v"}
    assert reader.stats.l2_hits == 1
    raw = await redis.get(cache.key("policy:1"))
    assert raw is not None and entry.decode(raw).payload == b'{"key":"policy:1","v":"v"}'
    assert 119_000 < await redis.pttl(cache.key("policy:1")) <= 120_000


async def test_skips_what_is_already_cached_unless_forced(cache: MultiLevelCache) -> None:
    for k in ("policy:0", "policy:4"):
        await cache.set(k, "old", ttl=60)
    cache.clear_l1()
    source = Source(value="new")
    warmer = CacheWarmer(cache, progress=False)
    result = await warmer.warm(keys(6), source, ttl=60)
    assert (result.warmed, result.skipped, result.failed) == (4, 2, {})
    assert set(source.calls) == {"policy:1", "policy:2", "policy:3", "policy:5"}
    assert await cache.get("policy:0", Loader()) == "old"

    before = await command_counts(cache.redis)
    forced = await warmer.warm(keys(6), source, ttl=60, force=True)
    assert (forced.warmed, forced.skipped) == (6, 0)
    # no EXISTS when forced; the SETs run inside one script call
    assert await commands_sent(cache.redis, before) == {"evalsha": 1, "set": 6}
    cache.clear_l1()
    assert await cache.get("policy:0", Loader()) == {"key": "policy:0", "v": "new"}


async def test_a_value_written_while_loading_is_not_overwritten(
    redis: aioredis.Redis, namespace: str, cache: MultiLevelCache
) -> None:
    """Between the EXISTS check and the write, another writer sets a newer value: it wins."""
    other = MultiLevelCache(redis, namespace=namespace, backplane=False)

    async def loader_for(key: str) -> str:
        if key == "policy:1":
            await other.set(key, "newer, from another writer")
        return "loaded earlier"

    result = await CacheWarmer(cache, progress=False).warm(keys(3), loader_for)
    assert (result.warmed, result.skipped, result.failed) == (2, 1, {})
    assert cache.key("policy:1") not in cache.l1
    assert await cache.get("policy:1", Loader()) == "newer, from another writer"
    forced = await CacheWarmer(cache, progress=False).warm(["policy:1"], loader_for, force=True)
    assert forced.warmed == 1 and cache.l1[cache.key("policy:1")][0] == "loaded earlier"


@pytest.mark.parametrize(("n", "batch_size"), [(1234, 100), (1000, 500), (7, 500)])
async def test_writes_are_pipelined_in_batches(
    cache: MultiLevelCache, n: int, batch_size: int
) -> None:
    """N keys cost ceil(N / batch) script calls per step, and the server sees exactly N SETs."""
    warmer = CacheWarmer(cache, batch_size=batch_size, progress=False)
    before = await command_counts(cache.redis)
    result = await warmer.warm(keys(n), Source(), ttl=60)
    batches = math.ceil(n / batch_size)
    assert result.warmed == n
    assert result.round_trips == warmer.round_trips == 2 * batches  # EXISTS call + SET call
    sent = await commands_sent(cache.redis, before)
    # A batch's write overlaps the next batch's check and loads: a second pooled connection
    # may be opened for it (its HELLO/CLIENT set-up is not part of warming).
    setup = {name: sent.pop(name) for name in ("hello", "client") if name in sent}
    assert sent == {"evalsha": 2 * batches, "exists": n, "set": n}
    assert sum(setup.values()) <= 2


async def test_with_a_backplane_one_publish_per_batch_evicts_other_l1s(
    redis: aioredis.Redis, namespace: str
) -> None:
    async with (
        MultiLevelCache(redis, namespace=namespace) as warming,
        MultiLevelCache(redis, namespace=namespace) as other,
    ):
        assert other.backplane is not None
        await other.get("policy:1", Loader("stale copy"))
        warmer = CacheWarmer(warming, batch_size=4, progress=False)
        before = await command_counts(redis)
        result = await warmer.warm(keys(10), Source(value="fresh"), ttl=60, force=True)
        assert result.round_trips == 3 + 3  # three SET calls, three PUBLISHes
        sent = await commands_sent(redis, before)
        assert (sent["set"], sent["publish"]) == (10, 3)
        await other.backplane.wait_received(3)
        assert other.key("policy:1") not in other.l1
        assert await other.get("policy:1", Loader()) == {"key": "policy:1", "v": "fresh"}


async def test_loader_concurrency_is_bounded(cache: MultiLevelCache) -> None:
    running = peak = 0

    async def loader_for(key: str) -> str:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        for _ in range(3):
            await asyncio.sleep(0)
        running -= 1
        return key

    result = await CacheWarmer(cache, concurrency=4, progress=False).warm(keys(50), loader_for)
    assert result.warmed == 50 and peak == 4


async def test_l1_copies_never_outlive_redis(redis: aioredis.Redis, namespace: str) -> None:
    clock = Clock()
    cache = MultiLevelCache(redis, namespace=namespace, backplane=False, clock=clock)
    warmer = CacheWarmer(cache, progress=False)
    await warmer.warm(["short", "long"], Source(), ttl=1, memory_ttl=60)
    expiry = entry.decode(await redis.get(cache.key("short"))).expires_at
    assert cache.l1[cache.key("short")][1] <= expiry
    clock.now += 1.001
    assert cache.key("short") not in cache.l1  # the memory TTL of 60 s was cut to the Redis 1 s
    await warmer.warm(["kept"], Source(), ttl=600, memory_ttl=5)
    clock.now += 4.9
    assert cache.key("kept") in cache.l1
    clock.now += 0.2
    assert cache.key("kept") not in cache.l1
    await warmer.warm(["redis-only"], Source(), fill_memory=False)
    assert cache.key("redis-only") not in cache.l1


async def test_warm_top_takes_the_most_requested_keys(cache: MultiLevelCache) -> None:
    log = ["p:1", "p:2", "p:1", "p:3", "p:2", "p:1", "p:4", "p:3", "p:5"]
    assert top_keys(log, 3) == ["p:1", "p:2", "p:3"]
    assert top_keys(log, 4) == ["p:1", "p:2", "p:3", "p:4"]  # ties: first seen first
    source = Source()
    result = await CacheWarmer(cache, progress=False).warm_top(iter(log), 2, source)
    assert result.warmed == 2 and set(source.calls) == {"p:1", "p:2"}
    assert await cache.redis.exists(cache.key("p:1"), cache.key("p:2"), cache.key("p:3")) == 2
    with pytest.raises(ValueError, match="n must be"):
        top_keys(log, -1)


async def test_lab_plans_and_warm_plan_with_the_insurance_db(
    redis: aioredis.Redis, cache: MultiLevelCache
) -> None:
    plans = lab_plans(Settings())
    assert {k: (p.ttl, p.memory_ttl) for k, p in plans.items()} == {
        "policy": (1800, 300), "customer": (900, 180), "agent": (3600, 600)
    }  # fmt: skip
    assert plans["agent"].key("A001") == "agent:stats:A001"
    assert lab_plan("policy", Settings(policy_ttl=120)).memory_ttl == 120
    with pytest.raises(ValueError, match="no warm plan"):
        lab_plan("quote", Settings())
    db = InsuranceDB(latency=Latency.zero())
    ids = [*db.policy_ids()[:5], "99999"]
    result = await CacheWarmer(cache, progress=False).warm_plan(plans["policy"], ids, db.get_policy)
    assert result.warmed == 5 and db.calls["get_policy"] == 6
    assert "returned None" in result.failed["policy:99999"]
    assert 1_799_000 < await redis.pttl(cache.key(f"policy:{ids[0]}")) <= 1_800_000
    policy = await cache.get(f"policy:{ids[0]}", Loader())
    assert policy["id"] == ids[0] and cache.stats.l1_hits == 1


async def test_none_is_cached_only_with_negative_ttl(redis: aioredis.Redis, namespace: str) -> None:
    cache = MultiLevelCache(redis, namespace=namespace, backplane=False, negative_ttl=5)
    result = await CacheWarmer(cache, progress=False).warm({"gone": Loader(None)}, ttl=60)
    assert result.warmed == 1 and 0 < await redis.pttl(cache.key("gone")) <= 5000


async def test_an_unserialisable_value_fails_alone(cache: MultiLevelCache) -> None:
    jobs = {"ok": Loader("fine"), "bad": Loader({1, 2}), "also-ok": Loader(0)}
    result = await CacheWarmer(cache, progress=False).warm(jobs)
    assert result.warmed == 2 and list(result.failed) == ["bad"]
    assert "cannot cache set" in result.failed["bad"]


async def test_bad_input_fails_before_anything_is_loaded(cache: MultiLevelCache) -> None:
    source = Source()
    with pytest.raises(ValueError, match="concurrency"):
        CacheWarmer(cache, concurrency=0)
    with pytest.raises(ValueError, match="batch_size"):
        CacheWarmer(cache, batch_size=True)
    warmer = CacheWarmer(cache, progress=False)
    with pytest.raises(TypeError, match="not one string"):
        await warmer.warm("policy:1", source)
    with pytest.raises(TypeError, match="loader_for"):
        await warmer.warm(["policy:1"])
    with pytest.raises(TypeError, match="not both"):
        await warmer.warm({"policy:1": Loader()}, source)
    with pytest.raises(ValueError, match="empty"):
        await warmer.warm(["policy:1", ""], source)
    with pytest.raises(ValueError, match="ttl"):
        await warmer.warm(["policy:1"], source, ttl=0)
    assert not source.calls and warmer.round_trips == 0
    empty = await warmer.warm([], source)
    assert (empty.total, empty.round_trips) == (0, 0)


async def test_redis_down_reports_every_key_failed(namespace: str) -> None:
    dead = aioredis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.2)
    cache = MultiLevelCache(dead, namespace=namespace, backplane=False)
    source = Source()
    result = await CacheWarmer(cache, progress=False).warm(keys(3), source)
    assert result.warmed == 0 and not source.calls  # the EXISTS check failed: nothing loaded
    assert set(result.failed) == set(keys(3))
    assert all(r.startswith("Redis failed: ConnectionError") for r in result.failed.values())
    forced = await CacheWarmer(cache, progress=False).warm(keys(3), source, force=True)
    assert forced.warmed == 0 and len(forced.failed) == 3 and len(source.calls) == 3
    assert len(cache.l1) == 0  # nothing reached Redis, so nothing is kept in memory
    strict = MultiLevelCache(dead, namespace=namespace, backplane=False, guard=Guard(strict=True))
    with pytest.raises(redis_exceptions.ConnectionError):
        await CacheWarmer(strict, progress=False).warm(keys(3), source)
    await dead.aclose()


async def test_warmed_keys_are_jittered_and_held_to_the_size_limit(
    redis: aioredis.Redis, namespace: str
) -> None:
    """Warming writes through the cache's store: the same jitter and size limit as `set`."""
    cache = MultiLevelCache(
        redis,
        namespace=namespace,
        backplane=False,
        stampede=Stampede(jitter=Jitter(0.2, random.Random(4))),
        guard=Guard(max_value_bytes=100),
    )
    jobs = {key: Loader("small") for key in keys(50)}
    jobs["policy:big"] = Loader("x" * 500)
    result = await CacheWarmer(cache, progress=False).warm(jobs, ttl=100)
    assert result.warmed == 50 and set(result.failed) == {"policy:big"}
    assert "over max_value_bytes=100" in result.failed["policy:big"]
    assert await redis.exists(cache.key("policy:big")) == 0 and jobs["policy:big"].calls == 1
    pttls = [await redis.pttl(cache.key(key)) for key in keys(50)]
    assert all(80_000 - 1000 <= p <= 120_000 for p in pttls)  # ±20 % of 100 s
    assert max(pttls) - min(pttls) > 10_000  # spread: not one expiry moment for all 50


async def test_op_timeout_bounds_warming_against_a_paused_server(
    fresh_server: RedisServer,
) -> None:
    """A server that stops answering (SIGSTOP) costs op_timeout per call, then failures."""
    client = aioredis.from_url(fresh_server.url)  # no socket timeout of its own
    cache = MultiLevelCache(
        client, namespace="w:", backplane=False, guard=Guard(op_timeout=0.2, breaker=False)
    )
    source = Source()
    await client.ping()
    assert fresh_server.process is not None
    os.kill(fresh_server.process.pid, signal.SIGSTOP)
    loop = asyncio.get_running_loop()
    try:
        started = loop.time()
        result = await CacheWarmer(cache, progress=False).warm(keys(10), source)
        took = loop.time() - started
    finally:
        os.kill(fresh_server.process.pid, signal.SIGCONT)
    assert result.warmed == 0 and set(result.failed) == set(keys(10))
    assert all("OperationTimeout" in why for why in result.failed.values())
    assert not source.calls  # the check for what exists failed: nothing was loaded
    assert took < 5  # bounded by op_timeout (without it, the call waits for the server forever)
    await client.aclose(close_connection_pool=True)
