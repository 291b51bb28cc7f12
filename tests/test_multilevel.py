"""MultiLevelCache (Part 3): L1 LRU and TTL bounds, glob agreement, no Redis on an L1 hit."""

from __future__ import annotations

import pytest
import redis.asyncio as aioredis
from redis import exceptions as redis_exceptions

from labcache.multilevel import Guard, Memory, MultiLevelCache
from labcache.serializers import SerializationError
from tests.helpers import Loader, command_counts, commands_sent


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


async def test_levels_progress_cold_l1_l2(cache: MultiLevelCache) -> None:
    loader = Loader({"id": 1})
    levels = []
    cache.events.subscribe(lambda e: levels.append(e.level) if e.kind == "hit" else None)
    await cache.get("policy:1", loader)
    await cache.get("policy:1", loader)
    await cache.get("policy:1", loader, skip_memory=True)
    assert loader.calls == 1
    assert (cache.stats.misses, cache.stats.l1_hits, cache.stats.l2_hits) == (1, 1, 1)
    assert levels == ["l1", "l2"]


async def test_l1_hit_sends_no_command_to_redis(cache: MultiLevelCache) -> None:
    await cache.get("k", Loader("v"))
    before = await command_counts(cache.redis)
    for _ in range(100):
        assert await cache.get("k", Loader("other")) == "v"
    assert await commands_sent(cache.redis, before) == {}
    assert cache.stats.l1_hits == 100


async def test_l1_evicts_least_recently_used_not_oldest(
    redis: aioredis.Redis, namespace: str
) -> None:
    cache = MultiLevelCache(redis, namespace=namespace, backplane=False, l1=Memory(3))
    for k in "abc":
        await cache.get(k, Loader(k))
    await cache.get("a", Loader("a"))  # a is now the most recently used
    await cache.get("d", Loader("d"))  # evicts b, the least recently used (FIFO would evict a)
    assert set(cache.l1.keys()) == {namespace + k for k in "acd"}


async def test_expired_l1_entry_is_never_served(redis: aioredis.Redis, namespace: str) -> None:
    clock = Clock()
    cache = MultiLevelCache(redis, namespace=namespace, clock=clock, backplane=False)
    await cache.get("k", Loader("v1"), ttl=300, memory_ttl=10)
    clock.now += 10.001
    assert namespace + "k" not in cache.l1
    assert await cache.get("k", Loader("v2")) == "v1"  # from L2, not L1
    assert cache.stats.l2_hits == 1


async def test_l1_copy_never_outlives_the_redis_entry(
    redis: aioredis.Redis, namespace: str
) -> None:
    """Mistake 6: an entry filled from L2 gets min(memory_ttl, the L2 entry's remaining TTL)."""
    clock = Clock()
    writer = MultiLevelCache(redis, namespace=namespace, clock=clock, backplane=False)
    reader = MultiLevelCache(redis, namespace=namespace, clock=clock, backplane=False)
    await writer.set("k", "v", ttl=30)
    clock.now += 25  # 5 s left in Redis
    assert await reader.get("k", Loader("fresh"), memory_ttl=60) == "v"
    expires_at = reader.l1[namespace + "k"].expires_at
    assert expires_at == pytest.approx(clock.now + 5, abs=0.01)
    clock.now += 5.01
    assert await reader.get("k", Loader("fresh")) == "fresh"  # logically expired everywhere


async def test_memory_bytes_bound(redis: aioredis.Redis, namespace: str) -> None:
    cache = MultiLevelCache(redis, namespace=namespace, backplane=False, l1=Memory(maxbytes=2_000))
    for i in range(50):
        await cache.get(f"k{i}", Loader("x" * 100))
    assert 0 < cache.l1.currsize <= 2_000
    await cache.get("huge", Loader("x" * 5_000))  # bigger than all of L1: served, not kept
    assert namespace + "huge" not in cache.l1


async def test_corrupt_or_foreign_entry_is_a_miss_and_deleted(cache: MultiLevelCache) -> None:
    await cache.redis.set(cache.key("k"), b'{"plain": "json from elsewhere"}')
    loader = Loader("v")
    assert await cache.get("k", loader) == "v"
    assert cache.stats.errors == 1
    raw = await cache.redis.get(cache.key("k"))
    assert raw is not None and raw.startswith(b"lc:")


async def test_redis_down_falls_back_to_loader_once(namespace: str) -> None:
    dead = aioredis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.2)
    cache = MultiLevelCache(dead, namespace=namespace, backplane=False)
    loader = Loader("v")
    assert await cache.get("k", loader) == "v"
    assert loader.calls == 1
    assert await cache.get("k", loader) == "v"  # kept briefly in L1 during the outage
    assert loader.calls == 1
    strict = MultiLevelCache(dead, namespace=namespace, backplane=False, guard=Guard(strict=True))
    with pytest.raises(redis_exceptions.ConnectionError):
        await strict.get("k", loader)
    await dead.aclose()


async def test_set_rejects_unserialisable_and_bad_ttls(cache: MultiLevelCache) -> None:
    with pytest.raises(SerializationError, match="policy:1"):
        await cache.set("policy:1", {1, 2})
    for bad in (0, -5, float("nan"), True):
        with pytest.raises(ValueError):
            await cache.set("k", 1, ttl=bad)
        with pytest.raises(ValueError):
            await cache.get("k2", Loader(1), memory_ttl=bad)


PATTERN_CASES = ["policy:1*", "policy:?", "policy:[12]*", "policy:[^1]*", "*:1[0-4]", "x*"]


@pytest.mark.parametrize("pattern", PATTERN_CASES)
async def test_l1_pattern_invalidation_agrees_with_redis(
    redis: aioredis.Redis, namespace: str, pattern: str
) -> None:
    """Mistake 4: L1 must drop exactly the keys Redis's SCAN MATCH drops, no more."""
    cache = MultiLevelCache(redis, namespace=namespace, backplane=False)
    keys = ["policy:1", "policy:19", "policy:2", "xpolicy:19", "policy:13", "customer:12", "p:1"]
    for k in keys:
        await cache.get(k, Loader(k))
    matched_in_redis = {
        k.decode()[len(namespace) :]
        async for k in redis.scan_iter(match=namespace + pattern, count=1000)
    }
    await cache.invalidate_pattern(pattern)
    left_in_l1 = {k[len(namespace) :] for k in cache.l1}
    assert left_in_l1 == set(keys) - matched_in_redis


async def test_tags_drop_exactly_their_keys(cache: MultiLevelCache) -> None:
    await cache.set("policy:1", 1, tags=["customer:7"])
    await cache.set("quote:a", 2, tags=["customer:7"])
    await cache.set("policy:2", 3, tags=["customer:8"])
    dropped = await cache.invalidate_tag("customer:7")
    assert sorted(dropped) == ["policy:1", "quote:a"]
    assert await cache.redis.exists(cache.key("policy:2"), cache.tag_key("customer:7")) == 1
    assert set(cache.l1.keys()) == {cache.key("policy:2")}
    assert await cache.redis.pttl(cache.tag_key("customer:8")) > 0
