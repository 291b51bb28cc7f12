"""The course's answers to notebook 03's exercises: two instances that agree, and warming."""

from __future__ import annotations

from collections.abc import Iterable

import redis.asyncio as aioredis

from labcache.multilevel import MultiLevelCache
from labcache.warming import CacheWarmer, LoaderFor, WarmPlan, WarmResult


async def make_two_instances(
    redis: aioredis.Redis, namespace: str
) -> tuple[MultiLevelCache, MultiLevelCache]:
    """Two caches on one namespace, both listening: a write on either evicts the other's L1 copy."""
    # backplane=True is the default: each set/invalidate is published on <namespace>__invalidate__,
    # a channel per namespace, so both instances need the same namespace to hear each other.
    # start() subscribes in the background; an instance that is not started publishes its own
    # writes but never hears the other's. (Not `async with`: it would stop both on return.)
    a = await MultiLevelCache(redis, namespace=namespace).start()
    b = await MultiLevelCache(redis, namespace=namespace).start()
    return a, b


async def warm_top_50(
    cache: MultiLevelCache, access_log: Iterable[str], load_policy: LoaderFor, plan: WarmPlan
) -> WarmResult:
    """Warm the 50 keys the log asks for most, with the plan's TTLs in Redis and in memory."""
    warmer = CacheWarmer(cache, progress=False)
    # warm_top counts the requests (Counter.most_common): a rare key that happens to come first
    # in the log is not warmed. It loads at most `concurrency` keys at a time, writes each batch
    # with one pipeline, and fills L1 for memory_ttl (never longer than the Redis entry lives).
    return await warmer.warm_top(
        access_log, 50, load_policy, ttl=plan.ttl, memory_ttl=plan.memory_ttl
    )
