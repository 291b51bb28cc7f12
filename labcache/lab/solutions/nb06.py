"""The course's answers to notebook 06's exercises (stampedes and TTL strategies)."""

from __future__ import annotations

from collections.abc import Callable

import redis.asyncio as aioredis

from labcache.multilevel import MultiLevelCache, Staleness, Stampede
from labcache.stampede import DistributedLock
from labcache.ttl import Jitter


def make_fleet_cache(redis: aioredis.Redis, namespace: str, ttl: float) -> MultiLevelCache:
    """One instance of a fleet: one load per cold key for all instances, TTLs spread by ±10 %."""
    return MultiLevelCache(
        redis,
        namespace=namespace,
        backplane=False,
        default_ttl=ttl,
        stampede=Stampede(
            # Single-flight (on by default) makes one load per instance; a lock in Redis, shared
            # by every instance through the same namespace, makes one load for the whole fleet.
            lock=DistributedLock(redis, namespace, wait_timeout=5),
            # Unseeded on purpose: instances seeded alike would give their keys the same TTLs.
            jitter=Jitter(fraction=0.1),
        ),
    )


def make_resilient_cache(
    redis: aioredis.Redis, namespace: str, clock: Callable[[], float]
) -> MultiLevelCache:
    """Serve the last value for 5 minutes past its TTL when the database fails or hangs."""
    return MultiLevelCache(
        redis,
        namespace=namespace,
        backplane=False,
        clock=clock,
        staleness=Staleness(
            grace=300,  # Redis keeps an entry TTL + 300 s: the stale copy to fall back on
            soft_timeout=0.05,  # wait 50 ms for the refresh: fresh if the database is quick
        ),
        # a key with no stale copy: give up on a hanging database after 1 s
        stampede=Stampede(hard_timeout=1.0),
    )
