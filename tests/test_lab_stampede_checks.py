"""Notebook 06's exercise checks pass the course's answers and name what a wrong one misses."""

from __future__ import annotations

from collections.abc import Callable

import redis.asyncio as aioredis

from labcache.lab.checks.nb06 import check_fleet_cache, check_resilient_cache
from labcache.lab.solutions.nb06 import make_fleet_cache, make_resilient_cache
from labcache.multilevel import MultiLevelCache, Staleness, Stampede
from labcache.ttl import Jitter


async def test_the_fleet_check(redis: aioredis.Redis, namespace: str) -> None:
    assert (await check_fleet_cache(make_fleet_cache, redis, namespace, 1800)).startswith("PASS")

    def no_lock(redis: aioredis.Redis, ns: str, ttl: float) -> MultiLevelCache:
        jitter = Stampede(jitter=Jitter(fraction=0.1))
        return MultiLevelCache(
            redis, namespace=ns, backplane=False, default_ttl=ttl, stampede=jitter
        )

    verdict = await check_fleet_cache(no_lock, redis, namespace, 1800)
    assert verdict.startswith("FAIL") and "called 3 times" in verdict
    assert [key async for key in redis.scan_iter(match=namespace + "*")] == []


async def test_the_resilient_check(redis: aioredis.Redis, namespace: str) -> None:
    verdict = await check_resilient_cache(make_resilient_cache, redis, namespace)
    assert verdict.startswith("PASS"), verdict

    def no_soft_timeout(
        redis: aioredis.Redis, ns: str, clock: Callable[[], float]
    ) -> MultiLevelCache:
        grace = Staleness(grace=600)
        return MultiLevelCache(redis, namespace=ns, backplane=False, clock=clock, staleness=grace)

    verdict = await check_resilient_cache(no_soft_timeout, redis, namespace)
    assert verdict.startswith("FAIL") and "without waiting for the refresh at all" in verdict
    assert [key async for key in redis.scan_iter(match=namespace + "*")] == []
