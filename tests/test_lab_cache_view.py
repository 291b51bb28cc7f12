"""Notebook 04's views of an invalidation (`labcache.lab.cache_view`), on a real Redis."""

from __future__ import annotations

import redis.asyncio as aioredis

from labcache.embedded import RedisServer
from labcache.invalidation import Invalidator, Targets
from labcache.lab.cache_view import (
    DROPPED,
    before_after,
    commands,
    describe,
    kind_counts,
    only_dropped,
    snapshot,
)
from labcache.multilevel import MultiLevelCache


async def test_snapshot_says_where_each_entry_is(redis: aioredis.Redis, namespace: str) -> None:
    cache = await MultiLevelCache(redis, namespace=namespace).start()
    other = await MultiLevelCache(redis, namespace=namespace).start()
    try:
        await cache.set("policy:1", {"premium": 1}, tags=["customer:c1"])
        await other.set("policy:2", {"premium": 2})
        await redis.set(namespace + "bench:x", 1)  # hidden: the benchmark's keys
        assert await snapshot(cache) == {"policy:1": "L1+L2", "policy:2": "L2"}
        assert await snapshot(other) == {"policy:1": "L2", "policy:2": "L1+L2"}
    finally:
        await other.close()
        await cache.close()


async def test_before_after_and_describe_show_what_an_event_dropped(
    redis: aioredis.Redis, namespace: str
) -> None:
    cache = await MultiLevelCache(redis, namespace=namespace).start()
    try:
        tags = {"policy:1": ["customer:c1"], "customer:c1": ["customer:c1"], "policy:2": []}
        for key, key_tags in tags.items():
            await cache.set(key, {"k": key}, tags=key_tags)
        before = await snapshot(cache)
        invalidator = Invalidator(cache)
        invalidator.add_rule("customer.updated", lambda **_: Targets(tags=["customer:c1"]))
        report = await invalidator.emit("customer.updated", customer_id="c1")
        table = before_after(before, await snapshot(cache), tags=tags)
        assert table.loc["policy:1"].tolist() == ["customer:c1", "L1+L2", DROPPED]
        assert table.loc["policy:2", "after"] == "L1+L2"
        assert sorted(only_dropped(table).index) == ["customer:c1", "policy:1"]
        text = describe(report)
        assert "customer.updated {'customer_id': 'c1'}" in text
        assert "-> 2 keys" in text and "FAILED" not in text
    finally:
        await cache.close()


def test_kind_counts_group_kept_and_dropped_entries() -> None:
    before = {
        "policy:1": "L2",
        "policy:2": "L2",
        "customer:c1:policies": "L2",
        "agent:stats:A": "L2",
    }
    after = {"policy:2": "L2", "agent:stats:A": "L2"}
    assert kind_counts(before, after) == (
        ["agent stats", "policy", "policy list"],
        [1, 1, 0],
        [0, 1, 1],
    )


async def test_commands_counts_what_the_server_received(fresh_server: RedisServer) -> None:
    client = aioredis.from_url(fresh_server.url)
    try:

        async def action() -> int:
            await client.set("a", 1)
            await client.set("b", 2)
            return int(await client.unlink("a", "b"))

        result, sent = await commands(client, action)
        assert result == 2
        assert sent == {"set": 2, "unlink": 1}  # the INFO calls themselves are left out
    finally:
        await client.aclose()
