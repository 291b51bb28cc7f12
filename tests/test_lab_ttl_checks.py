"""Notebook 01's exercise 2 check: the keys' TTLs, read in one round trip, and what is wrong."""

from __future__ import annotations

import redis.asyncio as aioredis

from labcache.lab.checks.nb01 import counting_client, ttl_problems, ttls_left


async def test_ttls_left_reads_each_key_in_one_round_trip(
    redis: aioredis.Redis, namespace: str
) -> None:
    keys = [namespace + name for name in ("short", "forever", "missing", "long")]
    await redis.set(keys[0], "x", ex=60)
    await redis.set(keys[1], "x")
    await redis.set(keys[3], "x", ex=3600)
    async with counting_client(redis) as (counted, trips):
        left = await ttls_left(counted, keys)
    assert trips.count == 1
    assert 0 < left[0] <= 60_000 and left[1] == -1 and left[2] == -2 and left[3] > 60_000
    assert ttl_problems(left, ttl=60) == [
        "1 of the 4 keys are not in Redis: write every key in `keys`",
        "1 of the keys never expire: give every SET ex=ttl",
        "1 of the keys expire later than ttl=60 s: use ex=ttl",
    ]
    assert ttl_problems(left[:1], ttl=60) == []
