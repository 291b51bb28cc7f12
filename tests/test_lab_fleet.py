"""Notebook 06's fleet: OS processes with caches of their own, one cold key, three scenarios."""

from __future__ import annotations

import redis.asyncio as aioredis

from labcache.lab.fleet import run_fleet


async def test_a_lock_in_redis_makes_the_fleet_load_once(
    redis: aioredis.Redis, namespace: str
) -> None:
    table = await run_fleet(redis, namespace + "fleet:", processes=2, requests=5)
    assert table["database calls"].to_dict() == {"no-lock": 2, "lock": 1, "dead-holder": 1}
    assert table["processes that loaded"].to_dict() == {"no-lock": 2, "lock": 1, "dead-holder": 1}
    # With the lock the second process waits; behind a dead holder both do, until its TTL ends.
    assert table["processes that waited"].to_dict() == {"no-lock": 0, "lock": 1, "dead-holder": 2}
    assert table["waits timed out"].sum() == 0
    assert list(table["requests"]) == [10, 10, 10]
