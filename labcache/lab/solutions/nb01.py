"""The course's answers to notebook 01's exercises (setup and connection)."""

from __future__ import annotations

import redis.asyncio as aioredis


async def store_greeting(redis: aioredis.Redis, key: str) -> None:
    """Store a greeting under `key` that Redis deletes by itself after 30 seconds."""
    # ex= is the TTL in seconds (px= in milliseconds), set in the same command as the value:
    # a separate EXPIRE afterwards would leave a key without a TTL if the client died between.
    await redis.set(key, "hello from part 1", ex=30)


async def write_pipelined(redis: aioredis.Redis, keys: list[str], ttl: int) -> None:
    """Write every key with a TTL of `ttl` seconds, all in one round trip to Redis."""
    # A pipeline only queues commands on the client; nothing is sent until execute(), which
    # sends all of them at once and reads all the replies: one round trip instead of len(keys).
    # transaction=False: no MULTI/EXEC around them, as we need batching, not atomicity.
    async with redis.pipeline(transaction=False) as pipe:
        for key in keys:
            pipe.set(key, "pipelined", ex=ttl)  # no await: queued, not sent
        await pipe.execute()
