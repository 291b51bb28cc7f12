"""Part 2: cache-aside. Look in Redis; on a miss, ask the loader and store what it returns.

What the lab's version got wrong, and this one does not:
- a cached `0`, `""`, `[]` or `{}` is a hit (the lab tested `if (cached)`: mistake 1);
- if Redis fails, the loader runs once and its value is returned (the lab's error path
  called the data source a second time: mistake 7);
- pattern invalidation walks the keyspace with SCAN and UNLINKs in batches (never KEYS: mistake 2).

Every Redis call is bounded by `op_timeout` and goes through a circuit breaker (labcache.breaker):
after a run of failures the cache stops asking Redis and serves from the loader until a probe
succeeds. A value larger than `max_value_bytes` is served but not cached.

A loader's exception reaches the caller, after an ERROR event at SOURCE; nothing is cached.
There is no stampede protection here: N concurrent misses of one key call the loader N times
(MultiLevelCache's single-flight shares one load between them).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar, cast

import redis.asyncio as aioredis
from redis.exceptions import RedisClusterException, RedisError

from labcache.breaker import (
    DEFAULT_OP_TIMEOUT,
    CircuitBreaker,
    CircuitOpen,
    coerce,
    guarded,
)
from labcache.cluster import is_cluster, scan_pages
from labcache.errors import LabcacheError
from labcache.events import (
    ERROR,
    FALLBACK,
    HIT,
    INVALIDATE,
    L2,
    LOAD,
    MISS,
    REJECTED,
    SET,
    SOURCE,
    EventHub,
)
from labcache.keys import glob_escape, validate_key
from labcache.serializers import CorruptEntry, JsonSerializer, Serializer, dumps_for, loads_for
from labcache.stats import Counters
from labcache.validate import optional_whole, positive_seconds

logger = logging.getLogger(__name__)

T = TypeVar("T")
Loader = Callable[[], Awaitable[T]]
# What a broken or unreachable Redis raises through redis.asyncio (RedisClusterException is
# not a RedisError: no reachable node, a slot with no primary).
REDIS_FAILURES = (RedisError, RedisClusterException, OSError, TimeoutError)


class ValueTooLarge(LabcacheError, ValueError):
    """A value whose serialised form is over the cache's `max_value_bytes`: not cached."""


def too_large(key: str, size: int, limit: int) -> ValueTooLarge:
    return ValueTooLarge(
        f"value for {key!r} is {size} bytes serialised, over max_value_bytes={limit}: not cached"
    )


def ttl_ms(ttl: float) -> int:
    """Seconds to Redis PX milliseconds, never rounding a positive TTL down to 0."""
    return max(1, round(ttl * 1000))


async def unlink_matching(redis: aioredis.Redis, pattern: str, *, count: int = 1000) -> int:
    """UNLINK every key matching a glob, one SCAN page at a time; return how many were removed.

    SCAN returns a page of at most ~`count` keys per round trip, and each page is unlinked at
    once, so the server never blocks on the whole keyspace the way KEYS does. On a Redis Cluster
    every primary is walked in turn, and redis-py splits each page's UNLINK per hash slot.
    """
    removed = 0
    async for page in scan_pages(redis, pattern, count=count):
        removed += int(await redis.unlink(*page))
    return removed


@dataclass
class AsideStats(Counters):
    """Counts since the cache was made; `hit_rate` is hits / (hits + misses)."""

    DERIVED: ClassVar[tuple[str, ...]] = ("hit_rate",)
    hits: int = 0
    misses: int = 0
    loads: int = 0
    errors: int = 0
    sets: int = 0
    invalidations: int = 0

    @property
    def hit_rate(self) -> float:
        total = self.hits + self.misses
        return self.hits / total if total else 0.0


class CacheAside:
    """Cache-aside over Redis: `get(key, loader, ttl)` is the whole pattern."""

    def __init__(
        self,
        redis: aioredis.Redis,
        *,
        namespace: str = "lab10:",
        default_ttl: float = 300,
        serializer: Serializer | None = None,
        negative_ttl: float | None = None,
        op_timeout: float | None = DEFAULT_OP_TIMEOUT,
        breaker: CircuitBreaker | bool = True,
        max_value_bytes: int | None = None,
    ) -> None:
        """Failure options (module `labcache.breaker`).

        `op_timeout`: seconds any one Redis call may take (None: the client's own timeout);
        `breaker`: True for a CircuitBreaker of the default settings, False for none, or one
        to share between caches on the same Redis; `max_value_bytes`: the largest value
        (serialised) that is cached; larger ones are served, not cached.
        """
        self.redis = redis
        self.namespace = namespace
        self.default_ttl = positive_seconds(default_ttl, "default_ttl")
        self.negative_ttl = None if negative_ttl is None else positive_seconds(negative_ttl)
        self.serializer = serializer or JsonSerializer()
        self.stats = AsideStats()
        self.events = EventHub()
        self.op_timeout = None if op_timeout is None else positive_seconds(op_timeout, "op_timeout")
        self.max_value_bytes = optional_whole(max_value_bytes, "max_value_bytes")
        self.breaker = coerce(breaker, cluster=is_cluster(redis))
        if self.breaker is not None:
            self.breaker.subscribe(
                lambda kind, why: self.events.report(kind, "*", L2, None, detail=why)
            )

    def key(self, key: str) -> str:
        """The Redis key for a cache key: the namespace prefix plus the key."""
        return self.namespace + validate_key(key)

    async def get(self, key: str, loader: Loader[T], ttl: float | None = None) -> T:
        """The cached value for `key`, or the loader's, stored for `ttl` seconds."""
        full = self.key(key)
        ttl = self.default_ttl if ttl is None else positive_seconds(ttl)
        start = time.perf_counter()
        try:
            data = await guarded(self.breaker, self.redis.get(full), self.op_timeout)
        except REDIS_FAILURES as exc:
            return await self._load_without_redis(key, loader, exc, start)
        if data is not None:
            try:
                value: T = loads_for(self.serializer, full, cast(bytes, data))
            except CorruptEntry as exc:
                await self._drop_corrupt(full, exc)
            else:
                self.stats.hits += 1
                self.events.report(HIT, key, L2, start)
                return value
        value = await self._load(key, loader)
        if value is not None or self.negative_ttl is not None:
            try:
                await self._store(full, value, ttl if value is not None else self.negative_ttl)
            except REDIS_FAILURES as exc:
                self._error(key, exc)
            except ValueTooLarge:
                pass  # served, not cached (REJECTED was emitted)
        self.stats.misses += 1
        self.events.report(MISS, key, SOURCE, start)
        return value

    async def set(self, key: str, value: Any, ttl: float | None = None) -> None:
        """Store `value` for `ttl` seconds (raises SerializationError for a non-JSON value)."""
        ttl = self.default_ttl if ttl is None else positive_seconds(ttl)
        await self._store(self.key(key), value, ttl)

    async def invalidate(self, *keys: str) -> int:
        """Remove keys from the cache; return how many existed."""
        if not keys:
            return 0
        unlink = self.redis.unlink(*(self.key(k) for k in keys))
        removed = int(await guarded(self.breaker, unlink, self.op_timeout))
        self.stats.invalidations += removed
        self.events.report(INVALIDATE, ",".join(keys), L2, None, detail=str(removed))
        return removed

    async def invalidate_pattern(self, pattern: str, *, count: int = 1000) -> int:
        """Remove every key matching a Redis glob (within the namespace); SCAN, never KEYS."""
        full_pattern = glob_escape(self.namespace) + pattern  # a `[` in a namespace is literal
        walk = unlink_matching(self.redis, full_pattern, count=count)
        removed = await guarded(self.breaker, walk, None)  # many calls: socket_timeout each
        self.stats.invalidations += removed
        self.events.report(INVALIDATE, pattern, L2, None, detail=str(removed))
        return removed

    async def _store(self, full: str, value: Any, ttl: float | None) -> None:
        data = dumps_for(self.serializer, full, value)
        assert ttl is not None
        if self.max_value_bytes is not None and len(data) > self.max_value_bytes:
            exc = too_large(self._short(full), len(data), self.max_value_bytes)
            logger.warning("%s", exc)
            self.events.report(REJECTED, self._short(full), L2, None, detail=str(exc))
            raise exc
        await guarded(self.breaker, self.redis.set(full, data, px=ttl_ms(ttl)), self.op_timeout)
        self.stats.sets += 1
        self.events.report(SET, self._short(full), L2, None)

    async def _load(self, key: str, loader: Loader[T]) -> T:
        """Run the loader, counted and timed; its failure is an ERROR event, then the caller's."""
        start = time.perf_counter()
        self.stats.loads += 1
        try:
            return await loader()
        except Exception as exc:
            self.events.report(
                ERROR, key, SOURCE, None, detail=f"loader: {type(exc).__name__}: {exc}"
            )
            raise
        finally:
            self.events.report(LOAD, key, SOURCE, start)

    async def _load_without_redis(
        self, key: str, loader: Loader[T], exc: BaseException, start: float
    ) -> T:
        """Redis failed: serve from the source, once, and do not try to cache the result."""
        self._error(key, exc)
        value = await self._load(key, loader)
        self.stats.misses += 1
        self.events.report(FALLBACK, key, SOURCE, start, detail=f"{type(exc).__name__}: {exc}")
        return value

    async def _drop_corrupt(self, full: str, exc: CorruptEntry) -> None:
        logger.warning("%s; deleting it", exc)
        self.stats.errors += 1
        self.events.report(ERROR, self._short(full), L2, None, detail=str(exc))
        with contextlib.suppress(*REDIS_FAILURES):
            await guarded(self.breaker, self.redis.unlink(full), self.op_timeout)

    def _short(self, full: str) -> str:
        # Events name the caller's key, as MultiLevelCache's do, not the Redis key.
        return full[len(self.namespace) :]

    def _error(self, key: str, exc: BaseException) -> None:
        # Skipped by the open breaker: logged quietly (the breaker logged the outage once).
        log = logger.debug if isinstance(exc, CircuitOpen) else logger.warning
        log("Redis failed for %r: %s", key, exc)
        self.stats.errors += 1
        self.events.report(ERROR, key, L2, None, detail=f"{type(exc).__name__}: {exc}")
