"""Small test helpers shared by several test modules."""

from __future__ import annotations

import redis.asyncio as aioredis


async def command_counts(client: aioredis.Redis) -> dict[str, int]:
    """Calls per command on the server so far (INFO commandstats), e.g. {'get': 3, 'set': 1}."""
    stats = await client.info("commandstats")
    return {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items()}


async def commands_sent(client: aioredis.Redis, before: dict[str, int]) -> dict[str, int]:
    """Commands the server saw since `before`, leaving out the INFO calls that measure them."""
    after = await command_counts(client)
    diff = {k: v - before.get(k, 0) for k, v in after.items() if v != before.get(k, 0)}
    diff.pop("info", None)
    return diff


class Loader:
    """An async loader that counts its calls and returns (or raises) what it is told to."""

    def __init__(self, value: object = "v", error: BaseException | None = None) -> None:
        self.value = value
        self.error = error
        self.calls = 0

    async def __call__(self) -> object:
        self.calls += 1
        if self.error is not None:
            raise self.error
        return self.value
