"""Notebook 03's exercise checks: the access log, loader and reads behind its two check cells."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from typing import Any

from labcache.multilevel import MultiLevelCache


def exercise_log(seed: int = 11) -> list[str]:
    """A shuffled access log whose 50 most requested keys are not its first 50 distinct keys.

    80 popular policies are requested 81, 80, ..., 2 times (no two alike, so the top 50 has no
    tie at its edge), among 600 policies requested once each: 3,920 requests.
    """
    log = [f"policy:{10_000 + rank}" for rank in range(80) for _ in range(81 - rank)]
    log += [f"policy:{20_000 + i}" for i in range(600)]
    random.Random(seed).shuffle(log)
    return log


def first_seen(log: list[str], n: int) -> set[str]:
    """The first `n` distinct keys of a log: what warming "the first 50" would pick."""
    return set(list(dict.fromkeys(log))[:n])


class CountingLoader:
    """The check's `load_policy(key)`: answers at once and counts its calls per key."""

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()

    async def __call__(self, key: str) -> dict[str, str]:
        self.calls[key] += 1
        await asyncio.sleep(0)
        return self.value(key)

    @staticmethod
    def value(key: str) -> dict[str, str]:
        """What the loader returns for `key` (so a stored value can be traced to its key)."""
        return {"policy_id": key.removeprefix("policy:")}


async def _nothing() -> Any:
    return None


async def read(cache: MultiLevelCache, key: str) -> tuple[Any, str]:
    """Read `key` through `cache` (a miss loads None); return the value and the level that served
    it: l1, l2 or source."""
    l1, l2 = cache.stats.l1_hits, cache.stats.l2_hits
    value = await cache.get(key, _nothing)
    level = "l1" if cache.stats.l1_hits > l1 else "l2" if cache.stats.l2_hits > l2 else "source"
    return value, level


def hears(writer: MultiLevelCache, reader: MultiLevelCache) -> bool:
    """Whether `reader` applies `writer`'s backplane messages: one channel, both ends on."""
    return (
        writer is not reader
        and writer.backplane is not None
        and reader.backplane is not None
        and reader.backplane.running
        and writer.backplane.channel == reader.backplane.channel
    )


async def read_after_write(
    writer: MultiLevelCache, reader: MultiLevelCache, key: str
) -> list[tuple[Any, str]]:
    """Writer sets {"premium": 1}, reader reads twice (its L1 now holds it), writer sets
    {"premium": 2}, reader reads again: the (value, level) of the reader's three reads.

    When the reader can hear the writer, each write is followed by waiting until the reader has
    applied its message (no read races a message); otherwise the reads follow at once.
    """
    reads = []
    for premium, n_reads in ((1, 2), (2, 1)):
        listening = hears(writer, reader)
        seen = reader.backplane.received if reader.backplane is not None else 0
        await writer.set(key, {"premium": premium})
        if listening and reader.backplane is not None:
            await reader.backplane.wait_received(seen + 1)
        for _ in range(n_reads):
            reads.append(await read(reader, key))
    return reads
