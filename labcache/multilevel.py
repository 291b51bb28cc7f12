"""Part 3: memory (L1) in front of Redis (L2) in front of a loader, composed of small parts:

- `Memory` (labcache.memory): L1, a bounded LRU with an expiry per entry (mistake 3); a copy
  expires no later than its Redis entry (mistake 6); an L1 hit sends nothing to Redis.
- `RedisStore` (labcache.store): L2, every read and write, each call under the `Guard`
  (op_timeout + circuit breaker); one write path for set, loads, warming and write-behind.
- `Loads` (labcache.loading): misses, refreshes and fallbacks, by the `Stampede` and `Staleness`
  policies (labcache.policies).
- `L1Sync` (labcache.sync): the backplane or tracking evicts every L1 copy of a changed key (5).

`clock` is wall time in seconds (`time.time` by default) for every part: Redis records carry
their expiry as a timestamp every instance reads. Durations in events use `time.perf_counter`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import redis.asyncio as aioredis

from labcache.aside import REDIS_FAILURES, Loader
from labcache.events import HIT, INVALIDATE, L1, L2, EventHub
from labcache.keys import glob_escape, validate_key
from labcache.loading import LevelStats, Loads, Read
from labcache.memory import L1Entry, Memory
from labcache.policies import Guard, Staleness, Stampede, policy
from labcache.serializers import JsonSerializer, Serializer
from labcache.store import RedisStore
from labcache.sync import L1Sync
from labcache.ttl import l1_ttl
from labcache.validate import positive_seconds

__all__ = ["Guard", "L1Entry", "LevelStats", "Memory", "MultiLevelCache", "Staleness", "Stampede"]
T = TypeVar("T")


class MultiLevelCache:
    """Memory (L1) in front of Redis (L2) in front of a loader.

    `l1` a `Memory` (size, byte bound, `ttl` of an L1 copy); `stampede`, `staleness` and `guard`
    the policies (labcache.policies); `backplane` evicts other instances' L1 copies through
    pub/sub, `tracking` through Redis's own client tracking (not on a cluster).
    """

    def __init__(
        self,
        redis: aioredis.Redis,
        *,
        namespace: str = "lab10:",
        default_ttl: float = 300,
        negative_ttl: float | None = None,
        serializer: Serializer | None = None,
        l1: Memory | None = None,
        backplane: bool = True,
        tracking: bool = False,
        stampede: Stampede | None = None,
        staleness: Staleness | None = None,
        guard: Guard | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.namespace = namespace
        self.default_ttl = positive_seconds(default_ttl, "default_ttl")
        self.negative_ttl = None if negative_ttl is None else positive_seconds(negative_ttl)
        self.clock = clock
        self.stampede = policy(stampede, Stampede, "stampede")
        self.staleness = policy(staleness, Staleness, "staleness")
        self.guard = policy(guard, Guard, "guard")
        self.l1 = policy(l1, Memory, "l1", clock=clock)
        if self.l1.clock is not clock:
            raise ValueError("give the cache and its Memory the same clock: Memory(clock=...)")
        self.stats = LevelStats()
        self.events = EventHub()
        self.store = RedisStore(
            redis, namespace, serializer or JsonSerializer(), clock, self.guard, self.events,
            self.stats, jitter=self.stampede.jitter, grace=self.staleness.grace,
        )  # fmt: skip
        self.loads = Loads(self.store, self.l1, self.stats, self.events, negative_ttl, self.guard)
        self.sync = L1Sync(self.store, self.l1, self.stats, self.events, self.loads.redis_error,
                           backplane=backplane, tracking=tracking)  # fmt: skip
        self.backplane, self.tracking = self.sync.backplane, self.sync.tracking
        self.redis, self.breaker = redis, self.store.breaker
        self.stampede_stats = self.loads.stampede_stats

    # -- the parts, by name --------------------------------------------------------------------

    @property
    def in_flight(self) -> int:
        """Loads and background refreshes running now (0 after `close()`)."""
        return len(self.loads)

    def waiting(self, key: str) -> int:
        """How many requests are waiting right now on a load or refresh of `key`."""
        return self.loads.waiting(self.key(key))

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> MultiLevelCache:
        """Start the backplane (and server-assisted tracking, if on); needs a running loop."""
        await self.sync.start()
        return self

    async def close(self) -> None:
        """Stop every background task this cache started (refreshes, loads, listeners)."""
        await self.loads.close()
        if self.stampede.lock is not None:
            await self.stampede.lock.close()
        await self.sync.stop()

    async def __aenter__(self) -> MultiLevelCache:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- the pattern -------------------------------------------------------------------------

    def key(self, key: str) -> str:
        return self.store.key(key)

    async def get(
        self,
        key: str,
        loader: Loader[T],
        *,
        ttl: float | None = None,
        memory_ttl: float | None = None,
        skip_memory: bool = False,
        tags: Iterable[str] = (),
        stampede: Stampede | None = None,
        staleness: Staleness | None = None,
    ) -> T:
        """L1, then Redis, then the loader; the loaded value is stored in both levels.

        `stampede`/`staleness` replace the cache's policies for this read (to change one field:
        `dataclasses.replace(cache.stampede, early_refresh=2)`). An expired value served within
        grace emits STALE (instead of HIT) with the reason.
        """
        full = self.namespace + key if key.__class__ is str else self.key(key)
        listening = self.events.listeners
        start = time.perf_counter() if listening else 0.0
        if not skip_memory:
            try:
                item = self.l1[full]
            except KeyError:
                pass
            else:
                if ttl is not None or memory_ttl is not None:  # bad TTLs fail on every path
                    self._ttls(ttl, memory_ttl)
                self.stats.l1_hits += 1
                if listening:
                    self.events.report(HIT, key, L1, start)
                if item.early is not None:  # XFetch draws on L1 hits too, with no Redis call
                    expires_at, load_time, stored = item.early
                    policy = stored if stampede is None else stampede
                    if self.loads.draw(policy, full, expires_at, load_time):
                        args = (key, full, loader, ttl, memory_ttl, tags, policy, staleness, start)
                        self.loads.refresh_early(self._read(*args), expires_at, load_time,
                                                 recheck=True)  # fmt: skip
                value: T = item.value
                return value
        read = self._read(key, full, loader, ttl, memory_ttl, tags, stampede, staleness, start)
        read.skip_memory = skip_memory
        try:
            if read.staleness.sliding:
                found = await self.store.read_sliding(
                    full, ttl=read.ttl, grace=read.staleness.grace
                )
            else:
                found = await self.store.read(full)
        except REDIS_FAILURES as exc:
            return await self.loads.fallback(read, exc)  # type: ignore[no-any-return]
        if found is None:
            return await self.loads.miss(read, None)  # type: ignore[no-any-return]
        now = self.clock()
        if now < found.expires_at:
            if self.loads.draw(read.stampede, full, found.expires_at, found.load_time):
                self.loads.refresh_early(read, found.expires_at, found.load_time)
            self.loads.keep(read, found, now)
            self.stats.l2_hits += 1
            if listening:
                self.events.report(HIT, key, L2, start)
            return found.value  # type: ignore[no-any-return]
        if now < found.expires_at + read.staleness.grace:
            return await self.loads.serve_stale(read, found)  # type: ignore[no-any-return]
        return await self.loads.miss(read, found.load_time)  # type: ignore[no-any-return]

    async def set(
        self,
        key: str,
        value: Any,
        *,
        ttl: float | None = None,
        memory_ttl: float | None = None,
        tags: Iterable[str] = (),
    ) -> None:
        """Write a value to both levels and evict the key from every other instance's L1."""
        full = self.key(key)
        ttl, memory_ttl = self._ttls(ttl, memory_ttl)
        self.l1.pop(full, None)
        record = self.store.record(full, value, ttl)
        await self.store.write(record, tags)
        self.fill_l1(key, value, expires_at=record.expires_at, memory_ttl=memory_ttl,
                     size=len(record.data))  # fmt: skip
        await self.announce([full])

    async def invalidate(self, *keys: str) -> int:
        """Drop keys from Redis and from every instance's L1; return how many Redis had."""
        fulls = [self.key(k) for k in keys]
        if not fulls:
            return 0
        self.sync.evict(fulls)
        removed = await self.store.unlink(*fulls)
        await self.sync.publish("keys", fulls)
        self._count_invalidation(",".join(keys), removed)
        return removed

    async def invalidate_pattern(self, pattern: str, *, count: int = 1000) -> int:
        """Drop every key matching a Redis glob (within the namespace) in Redis and every L1."""
        full_pattern = glob_escape(self.namespace) + pattern  # a `[` in a namespace is literal
        self.sync.evict_matching(full_pattern)
        removed = await self.store.unlink_matching(full_pattern, count=count)
        await self.sync.publish("pattern", full_pattern)
        self._count_invalidation(pattern, removed)
        return removed

    async def invalidate_tag(self, tag: str) -> list[str]:
        """Drop exactly the keys set with `tags=[tag]`, everywhere; return them."""
        members = await self.store.take_tag(tag)
        self.sync.evict(members)
        if members:
            await self.sync.publish("keys", members)
        self._count_invalidation(f"tag:{tag}", len(members))
        return [self.store.short(m) for m in members]

    def tag_key(self, tag: str) -> str:
        return self.store.tag_key(tag)

    def clear_l1(self) -> None:
        """Empty this instance's L1 only (Redis and other instances are untouched)."""
        self.sync.evict_all("clear_l1")

    def resize_l1(self, maxsize: int | None = None, maxbytes: int | None = None) -> None:
        """Replace L1 with an empty one of another size (a notebook knob)."""
        self.l1 = self.loads.memory = self.sync.memory = self.l1.resized(maxsize, maxbytes)

    def fill_l1(self, key: str, value: Any, *, expires_at: float, memory_ttl: float | None = None,
                size: int = 0) -> None:  # fmt: skip
        """Keep a copy of a value written to Redis; it expires by `expires_at` (the cache clock)."""
        _, memory_ttl = self._ttls(None, memory_ttl)
        sliding_ttl = self.default_ttl if self.staleness.sliding else None
        bound = l1_ttl(memory_ttl, self.clock(), expires_at, sliding_ttl=sliding_ttl)
        self.l1.put(self.key(key), value, bound, size)

    async def announce(self, full_keys: list[str]) -> None:
        """Tell every other instance to drop these Redis keys from its L1 (failures are events)."""
        await self.sync.publish("keys", full_keys)

    # -- internals ---------------------------------------------------------------------------

    def _ttls(self, ttl: float | None, memory_ttl: float | None) -> tuple[float, float]:
        return (
            self.default_ttl if ttl is None else positive_seconds(ttl),
            self.l1.ttl if memory_ttl is None else positive_seconds(memory_ttl, "memory_ttl"),
        )

    def _read(
        self,
        key: str,
        full: str,
        loader: Loader[Any],
        ttl: float | None,
        memory_ttl: float | None,
        tags: Iterable[str],
        stampede: Stampede | None,
        staleness: Staleness | None,
        start: float,
    ) -> Read:
        """A read's settings, validated: its TTLs, its policies and its tags."""
        validate_key(key)
        ttl, memory_ttl = self._ttls(ttl, memory_ttl)
        if stampede is not None or staleness is not None:  # a read's own policies, checked
            stampede = policy(stampede, Stampede, "stampede", default=self.stampede)
            staleness = policy(staleness, Staleness, "staleness", default=self.staleness)
        else:
            stampede, staleness = self.stampede, self.staleness
        tags = tuple(tags)
        if staleness.sliding and tags:
            raise ValueError("sliding expiration cannot be combined with tags: a tag set would "
                             "expire before the members that reads keep renewing")  # fmt: skip
        return Read(key, full, loader, ttl, memory_ttl, tags, stampede, staleness, start)

    def _count_invalidation(self, what: str, removed: int) -> None:
        self.stats.invalidations += removed
        self.events.report(INVALIDATE, what, L2, None, str(removed))
