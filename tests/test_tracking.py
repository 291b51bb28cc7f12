"""Server-assisted tracking (issue 12): writes made outside labcache evict the L1 copy."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from labcache.generations import Generation
from labcache.multilevel import MultiLevelCache
from tests.helpers import Loader, command_counts, commands_sent


@pytest.fixture
async def tracked(redis: aioredis.Redis, namespace: str) -> AsyncIterator[MultiLevelCache]:
    async with MultiLevelCache(redis, namespace=namespace, tracking=True) as cache:
        yield cache


async def _cached(cache: MultiLevelCache, key: str = "policy:1") -> None:
    """Load a key and leave it in L1.

    With tracking on, the server reports our own SET too, and that notice drops the first L1
    copy (Redis cannot tell us who wrote); the next read refills L1 from Redis and it stays.
    """
    seen = cache.tracking.received if cache.tracking else 0
    loader = Loader("old")
    await cache.get(key, loader)
    if cache.tracking is not None and loader.calls:  # our own write: await its notice
        await cache.tracking.wait_received(seen + 1)
        await cache.get(key, Loader("unused"))
    assert cache.key(key) in cache.l1


async def _external(redis_url: str, *command: object) -> None:
    """Another client: what a redis-cli or another service would do."""
    other = aioredis.from_url(redis_url)
    await other.execute_command(*command)
    await other.aclose()


@pytest.mark.parametrize(
    "command",
    [("SET", "{k}", "changed"), ("DEL", "{k}"), ("EXPIRE", "{k}", "100"), ("FLUSHDB",)],
    ids=["set", "del", "expire", "flushdb"],
)
async def test_external_write_evicts_tracked_l1_entry(
    tracked: MultiLevelCache, redis_url: str, command: tuple[str, ...]
) -> None:
    assert tracked.tracking is not None
    await _cached(tracked)
    seen = tracked.tracking.received
    args = [a.replace("{k}", tracked.key("policy:1")) for a in command]
    await _external(redis_url, *args)
    await tracked.tracking.wait_received(seen + 1)
    assert tracked.key("policy:1") not in tracked.l1


async def test_without_tracking_external_write_is_not_seen(
    redis: aioredis.Redis, namespace: str, redis_url: str
) -> None:
    """The gap this closes: the backplane hears only writes made through labcache."""
    async with MultiLevelCache(redis, namespace=namespace) as cache:
        await _cached(cache)
        await _external(redis_url, "SET", cache.key("policy:1"), "changed")
        await cache.redis.ping()  # a round trip after the write; still nothing evicts L1
        assert await cache.get("policy:1", Loader("new")) == "old"


async def test_other_namespaces_do_not_evict(tracked: MultiLevelCache, redis_url: str) -> None:
    assert tracked.tracking is not None
    await _cached(tracked)
    seen = tracked.tracking.received
    await _external(redis_url, "SET", "elsewhere:policy:1", "x")
    await _external(redis_url, "SET", tracked.key("policy:2"), "x")  # a marker we can await
    await tracked.tracking.wait_received(seen + 1)
    assert tracked.tracking.received == seen + 1
    assert tracked.key("policy:1") in tracked.l1


async def test_killed_tracking_connection_flushes_l1_and_recovers(
    tracked: MultiLevelCache, redis_url: str
) -> None:
    assert tracked.tracking is not None
    await _cached(tracked)
    interrupted = asyncio.Event()
    tracked.events.subscribe(
        lambda e: interrupted.set() if e.detail.startswith("tracking interrupted") else None
    )
    admin = aioredis.from_url(redis_url)
    try:
        await admin.client_kill_filter(_type="pubsub", skipme=True)
        await asyncio.wait_for(interrupted.wait(), 10)
        assert tracked.key("policy:1") not in tracked.l1
        await tracked.tracking.start()  # returns once tracking is live again
        await _cached(tracked)
        seen = tracked.tracking.received
        await admin.set(tracked.key("policy:1"), "changed")
        await tracked.tracking.wait_received(seen + 1)
        assert tracked.key("policy:1") not in tracked.l1
    finally:
        await admin.aclose()


async def test_l1_hit_still_sends_nothing_with_tracking(tracked: MultiLevelCache) -> None:
    await _cached(tracked)
    before = await command_counts(tracked.redis)
    for _ in range(50):
        await tracked.get("policy:1", Loader("other"))
    sent = await commands_sent(tracked.redis, before)
    sent.pop("client|id", None)  # the tracker's own once-a-second liveness check
    assert sent == {}


async def test_generation_bump_invalidates_the_family_only(
    redis: aioredis.Redis, namespace: str
) -> None:
    async with MultiLevelCache(redis, namespace=namespace) as cache:
        policies, customers = Generation(cache, "policy"), Generation(cache, "customer")
        for i in range(20):
            await policies.get(str(i), Loader(f"p{i}-v1"))
        await customers.get("1", Loader("c1-v1"))
        before = await command_counts(redis)
        assert await policies.bump() == 1
        sent = await commands_sent(redis, before)
        assert sent == {"incrby": 1, "publish": 1}  # one counter bump, one backplane notice
        for i in range(20):
            assert await policies.get(str(i), Loader(f"p{i}-v2")) == f"p{i}-v2"
        assert await customers.get("1", Loader("c1-v2")) == "c1-v1"


async def test_generation_bump_reaches_other_instances(
    redis: aioredis.Redis, namespace: str
) -> None:
    async with (
        MultiLevelCache(redis, namespace=namespace) as a,
        MultiLevelCache(redis, namespace=namespace) as b,
    ):
        ga, gb = (
            Generation(a, "policy", check_every=3600),
            Generation(b, "policy", check_every=3600),
        )
        await gb.get("1", Loader("v1"))
        assert b.backplane is not None
        seen = b.backplane.received
        await ga.bump()
        await b.backplane.wait_received(seen + 1)
        assert await gb.get("1", Loader("v2")) == "v2"
