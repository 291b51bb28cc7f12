"""O(1) invalidation of a whole key family: its keys embed a generation number; INCR bumps it.

Invalidating `policy:*` with SCAN walks the whole keyspace (200k keys: hundreds of round trips
and real server CPU). Here every policy key is written as `policy:g<N>:<id>`, where N is read
from one counter key. `bump()` is a single INCR: every reader moves to generation N+1 at once,
and the old entries are never read again and age out by their TTL.
"""

from __future__ import annotations

from typing import Any, TypeVar

from labcache.aside import Loader
from labcache.multilevel import MultiLevelCache

T = TypeVar("T")


class Generation:
    """A key family (`policy`, `customer`, ...) that one INCR invalidates."""

    def __init__(self, cache: MultiLevelCache, family: str, *, check_every: float = 1.0) -> None:
        self.cache = cache
        self.family = family
        self.check_every = check_every  # how long L1 may trust the counter without tracking
        self.counter_key = f"__gen__:{family}"

    async def current(self) -> int:
        """The family's generation: from L1 when fresh, else one GET of the counter."""
        full = self.cache.key(self.counter_key)
        known = self.cache.l1.value(full)
        if known is not None:
            return int(known)
        raw = await self.cache.store.call(self.cache.redis.get(full))
        generation = int(raw or 0)
        # A plain integer under the namespace: tracking and the backplane evict it like any key.
        self.cache.l1.put(full, generation, self.check_every, 8)
        return generation

    async def key(self, key: str) -> str:
        """The cache key for `key` in the family's current generation."""
        return f"{self.family}:g{await self.current()}:{key}"

    async def get(self, key: str, loader: Loader[T], **options: Any) -> T:
        return await self.cache.get(await self.key(key), loader, **options)

    async def set(self, key: str, value: Any, **options: Any) -> None:
        await self.cache.set(await self.key(key), value, **options)

    async def bump(self) -> int:
        """Invalidate every key of the family, everywhere, with one INCR; return the new number."""
        full = self.cache.key(self.counter_key)
        generation = int(await self.cache.store.call(self.cache.redis.incr(full)))
        self.cache.l1.pop(full, None)
        await self.cache.announce([full])
        return generation
