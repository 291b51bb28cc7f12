"""Part 3: memory (L1) in front of Redis (L2) in front of a loader.

- L1 is a cachetools `TLRUCache`: bounded, least-recently-*used* eviction, an expiry per entry,
  never serving an expired entry (the lab's "LRU" was FIFO with lingering items: mistake 3).
- An L1 copy taken from Redis expires no later than the Redis entry (mistake 6).
- Invalidations reach every instance's L1 through the backplane (mistake 5).
- An L1 hit sends nothing to Redis.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from typing import Any, TypeVar, cast

import pandas as pd
import redis.asyncio as aioredis
from cachetools import TLRUCache

from labcache import entry
from labcache.aside import REDIS_FAILURES, Loader, unlink_matching, validate_ttl
from labcache.backplane import Backplane
from labcache.events import (
    ERROR,
    EVICT,
    FALLBACK,
    HIT,
    INVALIDATE,
    L1,
    L2,
    LOAD,
    MISS,
    SET,
    SOURCE,
    CacheEvent,
    EventHub,
)
from labcache.keys import glob_to_regex, validate_key
from labcache.serializers import CorruptEntry, JsonSerializer, Serializer, dumps_for, loads_for
from labcache.stampede import SingleFlight

logger = logging.getLogger(__name__)
T = TypeVar("T")

# Tag sets live as long as their longest-lived member; all of it atomic, so a key set while a tag
# is being invalidated is either dropped with it or written after it, never half-recorded.
_SET_WITH_TAGS = """
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
for i = 2, #KEYS do
  redis.call('SADD', KEYS[i], KEYS[1])
  if redis.call('PTTL', KEYS[i]) < tonumber(ARGV[2]) then
    redis.call('PEXPIRE', KEYS[i], ARGV[2])
  end
end
return 1
"""
_INVALIDATE_TAG = """
local members = redis.call('SMEMBERS', KEYS[1])
for i = 1, #members, 1000 do
  redis.call('UNLINK', unpack(members, i, math.min(i + 999, #members)))
end
redis.call('DEL', KEYS[1])
return members
"""


@dataclass
class LevelStats:
    """Where requests were served from, since the cache was made."""

    l1_hits: int = 0
    l2_hits: int = 0
    misses: int = 0
    loads: int = 0
    load_time: float = 0.0
    coalesced: int = 0
    errors: int = 0
    sets: int = 0
    invalidations: int = 0
    l1_evictions: int = 0

    @property
    def requests(self) -> int:
        return self.l1_hits + self.l2_hits + self.misses

    @property
    def hit_rate(self) -> float:
        return (self.l1_hits + self.l2_hits) / self.requests if self.requests else 0.0

    def to_dataframe(self) -> pd.DataFrame:
        """One row per level: how many requests it served and what share of all requests."""
        served = {"L1 (memory)": self.l1_hits, "L2 (Redis)": self.l2_hits, "source": self.misses}
        total = self.requests or 1
        return pd.DataFrame(
            {"requests": served, "share": {k: v / total for k, v in served.items()}}
        ).rename_axis("level")

    def as_dict(self) -> dict[str, float]:
        return {**asdict(self), "requests": self.requests, "hit_rate": self.hit_rate}


def _l1_expiry(_key: str, item: tuple[Any, float, int], _now: float) -> float:
    return item[1]


class MultiLevelCache:
    """Memory (L1) in front of Redis (L2) in front of a loader."""

    def __init__(
        self,
        redis: aioredis.Redis,
        *,
        namespace: str = "lab10:",
        default_ttl: float = 300,
        memory_ttl: float = 60,
        l1_maxsize: int = 1000,
        l1_maxbytes: int | None = None,
        serializer: Serializer | None = None,
        negative_ttl: float | None = None,
        backplane: bool = True,
        single_flight: bool = True,
        strict: bool = False,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.redis = redis
        self.namespace = namespace
        self.default_ttl = validate_ttl(default_ttl, "default_ttl")
        self.memory_ttl = validate_ttl(memory_ttl, "memory_ttl")
        self.negative_ttl = None if negative_ttl is None else validate_ttl(negative_ttl)
        self.serializer = serializer or JsonSerializer()
        self.strict = strict
        self.clock = clock
        self.stats = LevelStats()
        self.events = EventHub()
        self.l1: TLRUCache[str, tuple[Any, float, int]] = self._new_l1(l1_maxsize, l1_maxbytes)
        self._flight = SingleFlight() if single_flight else None
        self.backplane = (
            Backplane(
                redis,
                f"{namespace}__invalidate__",
                on_keys=self._evict_keys,
                on_pattern=self._evict_pattern,
                on_reset=self._evict_all,
            )
            if backplane
            else None
        )

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> MultiLevelCache:
        """Start listening to other instances' invalidations (needs a running event loop)."""
        if self.backplane is not None:
            await self.backplane.start()
        return self

    async def close(self) -> None:
        """Stop every background task this cache started."""
        if self.backplane is not None:
            await self.backplane.stop()

    async def __aenter__(self) -> MultiLevelCache:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def resize_l1(self, maxsize: int | None = None, maxbytes: int | None = None) -> None:
        """Replace L1 with an empty one of another size (a notebook knob)."""
        self.l1 = self._new_l1(maxsize or 1000, maxbytes)

    # -- the pattern -------------------------------------------------------------------------

    def key(self, key: str) -> str:
        return self.namespace + validate_key(key)

    async def get(
        self,
        key: str,
        loader: Loader[T],
        *,
        ttl: float | None = None,
        memory_ttl: float | None = None,
        skip_memory: bool = False,
        tags: Iterable[str] = (),
    ) -> T:
        """L1, then Redis, then the loader; the loaded value is stored in both levels."""
        full = self.namespace + key if key.__class__ is str else self.key(key)
        start = time.perf_counter() if self.events else 0.0
        if not skip_memory:
            try:
                item = self.l1[full]
            except KeyError:
                pass
            else:
                self.stats.l1_hits += 1
                if self.events:
                    self._emit(HIT, key, L1, start)
                value: T = item[0]
                return value
        validate_key(key)
        ttl, memory_ttl = self._ttls(ttl, memory_ttl)
        try:
            data = await self.redis.get(full)
        except REDIS_FAILURES as exc:
            return await self._fallback(key, full, loader, exc, start, min(ttl, memory_ttl))
        if data is not None:
            found = self._decode(full, cast(bytes, data))
            if found is not None:
                value, expires_at = found
                remaining = expires_at - self.clock()
                if remaining > 0:
                    if not skip_memory:
                        self._fill_l1(full, value, min(memory_ttl, remaining), len(data))
                    self.stats.l2_hits += 1
                    self._emit(HIT, key, L2, start)
                    return value
            else:
                await self._drop(full)

        async def load() -> T:
            return await self._load_and_store(key, full, loader, ttl, memory_ttl, tags)

        if self._flight is None:
            value = await load()
        else:
            value, shared = await self._flight.run(full, load)
            self.stats.coalesced += shared
        self.stats.misses += 1
        self._emit(MISS, key, SOURCE, start)
        return value

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
        size = await self._write(full, value, ttl, 0.0, tags)
        self._fill_l1(full, value, min(ttl, memory_ttl), size)
        await self._publish("keys", [full])

    async def invalidate(self, *keys: str) -> int:
        """Drop keys from Redis and from every instance's L1; return how many Redis had."""
        fulls = [self.key(k) for k in keys]
        if not fulls:
            return 0
        self._evict_keys(fulls)
        removed = int(await self.redis.unlink(*fulls))
        await self._publish("keys", fulls)
        self._count_invalidation(",".join(keys), removed)
        return removed

    async def invalidate_pattern(self, pattern: str, *, count: int = 1000) -> int:
        """Drop every key matching a Redis glob (within the namespace) in Redis and every L1."""
        full_pattern = self.namespace + pattern
        self._evict_pattern(full_pattern)
        removed = await unlink_matching(self.redis, full_pattern, count=count)
        await self._publish("pattern", full_pattern)
        self._count_invalidation(pattern, removed)
        return removed

    async def invalidate_tag(self, tag: str) -> list[str]:
        """Drop exactly the keys set with `tags=[tag]`, everywhere; return them."""
        script = self.redis.register_script(_INVALIDATE_TAG)
        members = [m.decode() for m in await script(keys=[self.tag_key(tag)])]
        self._evict_keys(members)
        if members:
            await self._publish("keys", members)
        self._count_invalidation(f"tag:{tag}", len(members))
        return [m[len(self.namespace) :] for m in members]

    def tag_key(self, tag: str) -> str:
        return f"{self.namespace}__tag__:{tag}"

    def clear_l1(self) -> None:
        """Empty this instance's L1 only (Redis and other instances are untouched)."""
        self._evict_all("clear_l1")

    # -- internals ---------------------------------------------------------------------------

    def _ttls(self, ttl: float | None, memory_ttl: float | None) -> tuple[float, float]:
        return (
            self.default_ttl if ttl is None else validate_ttl(ttl),
            self.memory_ttl if memory_ttl is None else validate_ttl(memory_ttl, "memory_ttl"),
        )

    def _new_l1(self, maxsize: int, maxbytes: int | None) -> TLRUCache[str, tuple[Any, float, int]]:
        if maxbytes is not None:
            return TLRUCache(maxbytes, _l1_expiry, timer=self.clock, getsizeof=lambda item: item[2])
        if maxsize < 1:
            raise ValueError(f"l1_maxsize must be at least 1, not {maxsize}")
        return TLRUCache(maxsize, _l1_expiry, timer=self.clock)

    def _fill_l1(self, full: str, value: Any, ttl: float, size: int) -> None:
        # A value larger than the whole L1 byte budget is served, not kept.
        with contextlib.suppress(ValueError):
            self.l1[full] = (value, self.clock() + ttl, size)

    def _decode(self, full: str, data: bytes) -> tuple[Any, float] | None:
        try:
            record = entry.decode(data, full)
            return loads_for(self.serializer, full, record.payload), record.expires_at
        except CorruptEntry as exc:
            logger.warning("%s; treating it as a miss and deleting it", exc)
            self.stats.errors += 1
            self._emit(ERROR, full, L2, None, detail=str(exc))
            return None

    async def _drop(self, full: str) -> None:
        try:
            await self.redis.unlink(full)
        except REDIS_FAILURES as exc:
            self._redis_error(full, exc)

    async def _load_and_store(
        self,
        key: str,
        full: str,
        loader: Loader[T],
        ttl: float,
        memory_ttl: float,
        tags: Iterable[str],
    ) -> T:
        start = time.perf_counter()
        self.stats.loads += 1
        try:
            value = await loader()
        finally:
            elapsed = time.perf_counter() - start
            self.stats.load_time += elapsed
            self._emit(LOAD, key, SOURCE, start)
        if value is None and self.negative_ttl is None:
            return value
        store_ttl = ttl if value is not None else self.negative_ttl
        assert store_ttl is not None
        try:
            size = await self._write(full, value, store_ttl, elapsed, tags)
        except REDIS_FAILURES as exc:  # the value is good; only caching it failed (mistake 7)
            self._redis_error(key, exc)
            size = 0
        self._fill_l1(full, value, min(store_ttl, memory_ttl), size)
        return value

    async def _write(
        self, full: str, value: Any, ttl: float, load_time: float, tags: Iterable[str]
    ) -> int:
        payload = dumps_for(self.serializer, full, value)
        data = entry.encode(payload, self.clock() + ttl, load_time)
        px = max(1, round(ttl * 1000))
        tag_keys = [self.tag_key(t) for t in tags]
        if tag_keys:
            script = self.redis.register_script(_SET_WITH_TAGS)
            await script(keys=[full, *tag_keys], args=[data, px])
        else:
            await self.redis.set(full, data, px=px)
        self.stats.sets += 1
        self._emit(SET, full, L2, None)
        return len(data)

    async def _fallback(
        self,
        key: str,
        full: str,
        loader: Loader[T],
        exc: BaseException,
        start: float,
        l1_ttl: float,
    ) -> T:
        """Redis failed: ask the source once, keep the value briefly in L1, skip Redis."""
        self._redis_error(key, exc)  # raises in strict mode
        load_start = time.perf_counter()
        self.stats.loads += 1
        value = await loader()
        self.stats.load_time += time.perf_counter() - load_start
        if value is not None:
            self._fill_l1(full, value, l1_ttl, 0)
        self.stats.misses += 1
        self._emit(FALLBACK, key, SOURCE, start, detail=type(exc).__name__)
        return value

    async def _publish(self, op: str, arg: list[str] | str) -> None:
        if self.backplane is None:
            return
        try:
            await self.backplane.publish(op, arg)
        except REDIS_FAILURES as exc:
            self._redis_error(str(arg), exc)

    def _evict_keys(self, fulls: list[str]) -> None:
        for full in fulls:
            if self.l1.pop(full, None) is not None:
                self.stats.l1_evictions += 1
                self._emit(EVICT, full, L1, None)

    def _evict_pattern(self, full_pattern: str) -> None:
        regex = glob_to_regex(full_pattern)
        self._evict_keys([k for k in list(self.l1.keys()) if regex.match(k.encode())])

    def _evict_all(self, reason: str) -> None:
        self.stats.l1_evictions += len(self.l1)
        self.l1.clear()
        self._emit(EVICT, "*", L1, None, detail=reason)

    def _count_invalidation(self, what: str, removed: int) -> None:
        self.stats.invalidations += removed
        self._emit(INVALIDATE, what, L2, None, detail=str(removed))

    def _redis_error(self, key: str, exc: BaseException) -> None:
        logger.warning("Redis failed for %r: %s: %s", key, type(exc).__name__, exc)
        self.stats.errors += 1
        self._emit(ERROR, key, L2, None, detail=f"{type(exc).__name__}: {exc}")
        if self.strict:
            raise exc

    def _emit(self, kind: str, key: str, level: str, start: float | None, detail: str = "") -> None:
        if self.events:
            now = time.perf_counter()
            duration = 0.0 if start is None else now - start
            self.events.emit(CacheEvent(kind, key, level, duration, now, detail))
