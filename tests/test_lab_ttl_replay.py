"""labcache.lab.ttl_replay: the TTL alone decides which of the paced reads go to the database."""

from __future__ import annotations

import redis.asyncio as aioredis

from labcache.lab.ttl_replay import replay


async def test_a_long_ttl_misses_once(redis: aioredis.Redis, namespace: str) -> None:
    seen = await replay(redis, namespace, ttl=60, db_ms=10, reads=5, every=0.01)
    assert seen.db_calls == 1
    assert len(seen.points["miss"][0]) == 1
    assert len(seen.points["hit"][0]) == 4
    assert seen.hit_rate == 0.8
    assert "80% hits" in seen.title()
    assert await redis.exists(namespace + "policy:12345") == 0, "the replay leaves no key"


async def test_a_ttl_shorter_than_the_gap_misses_every_read(
    redis: aioredis.Redis, namespace: str
) -> None:
    seen = await replay(redis, namespace, ttl=0.05, db_ms=10, reads=3, every=0.25)
    assert seen.db_calls == 3
    assert seen.points["hit"] == ([], [])
    assert seen.hit_rate == 0.0
    assert seen.mean_ms >= 10  # every read paid the database's 10 ms
