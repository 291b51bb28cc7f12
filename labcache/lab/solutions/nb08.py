"""The course's answers to notebook 08 (scaling out on a Redis Cluster)."""

from __future__ import annotations

from typing import cast

from redis.asyncio.cluster import RedisCluster


def customer_keys(namespace: str, cid: str) -> list[str]:
    """Three key names for one customer that share a slot: one hash tag per customer."""
    # Only the text between the first "{" and the next "}" is hashed, so all three keys land
    # in the slot of "customer:<cid>". The tag names the customer, not the namespace: each
    # customer gets a slot of their own, and customers still spread over every primary.
    tag = f"{{customer:{cid}}}"
    return [f"{namespace}{tag}:{part}" for part in ("profile", "policies", "quotes")]


async def count_matching(redis: RedisCluster, pattern: str) -> int:
    """Count the keys matching a glob on every primary of a cluster, with SCAN (never KEYS)."""
    found: set[bytes] = set()  # SCAN may return a key twice (e.g. while a table resizes)
    for node in redis.get_primaries():  # each primary holds its own share of the keys
        cursor = 0
        while True:  # one node's walk ends when its cursor comes back to 0, not after a page
            cursors, keys = await redis.scan(
                cursor=cursor, match=pattern, count=500, target_nodes=node
            )
            found.update(cast(list[bytes], keys))
            cursor = int(cast(dict[str, int], cursors)[node.name])
            if cursor == 0:
                break
    return len(found)
