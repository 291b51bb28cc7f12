"""Part 3: memory (L1) in front of Redis (L2) in front of a loader.

- L1 is a cachetools `TLRUCache`: bounded, least-recently-*used* eviction, an expiry per entry,
  never serving an expired entry (the lab's "LRU" was FIFO with lingering items: mistake 3).
- An L1 copy taken from Redis expires no later than the Redis entry (mistake 6).
- Invalidations reach every instance's L1 through the backplane (mistake 5).
- An L1 hit sends nothing to Redis.
- Redis down or slow: every call is bounded by `op_timeout`, a circuit breaker stops calling a
  Redis that keeps failing, and reads fall back to the loader (L1 keeps serving).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar, cast

import redis.asyncio as aioredis
from cachetools import TLRUCache

from labcache import entry
from labcache.aside import (
    REDIS_FAILURES,
    Loader,
    ValueTooLarge,
    too_large,
    ttl_ms,
    unlink_matching,
)
from labcache.backplane import Backplane
from labcache.breaker import (
    DEFAULT_OP_TIMEOUT,
    CircuitBreaker,
    CircuitOpen,
    coerce,
    guarded,
)
from labcache.cluster import (
    TRACKING_UNSUPPORTED,
    ClusterBackplane,
    ClusterUnsupported,
    is_cluster,
    set_with_tags,
)
from labcache.cluster import invalidate_tag as cluster_invalidate_tag
from labcache.errors import LoadTimeout
from labcache.events import (
    EARLY_REFRESH,
    ERROR,
    EVICT,
    FALLBACK,
    HIT,
    INVALIDATE,
    L1,
    L2,
    LOAD,
    LOCK_WAIT,
    MISS,
    REJECTED,
    SET,
    SOURCE,
    STALE,
    CacheEvent,
    EventHub,
)
from labcache.keys import glob_escape, glob_to_regex, validate_key
from labcache.optional import pandas
from labcache.serializers import CorruptEntry, JsonSerializer, Serializer, dumps_for, loads_for
from labcache.stampede import (
    MISSING,
    DistributedLock,
    SingleFlight,
    StampedeStats,
    XFetch,
    load_with_lock,
    wait_or_stale,
)
from labcache.tracking import KeyTracking
from labcache.ttl import Jitter, Sliding, l1_ttl
from labcache.validate import non_negative, optional_whole, positive_seconds, seconds, whole

if TYPE_CHECKING:  # pandas is the course extra's: imported only where a table is asked for
    import pandas as pd

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
        pd = pandas()
        served = {"L1 (memory)": self.l1_hits, "L2 (Redis)": self.l2_hits, "source": self.misses}
        total = self.requests or 1
        return pd.DataFrame(
            {"requests": served, "share": {k: v / total for k, v in served.items()}}
        ).rename_axis("level")

    def as_dict(self) -> dict[str, float]:
        return {**asdict(self), "requests": self.requests, "hit_rate": self.hit_rate}


class L1Entry(NamedTuple):
    """What L1 keeps per key; `early` is what an XFetch draw on an L1 hit needs."""

    value: Any
    expires_at: float  # when this L1 copy expires (the cache clock)
    size: int  # bytes, for a byte-bounded L1
    # (Redis expiry, load time, beta) while early refresh is on for this key; else None.
    early: tuple[float, float, float] | None = None


def _l1_expiry(_key: str, item: L1Entry, _now: float) -> float:
    return item.expires_at


@dataclass(frozen=True)
class _Options:
    """A read's stampede and staleness settings (see MultiLevelCache.get)."""

    early_refresh: float  # XFetch beta; 0 = off
    grace: float
    soft_timeout: float
    hard_timeout: float | None
    sliding: bool


@dataclass
class _Read:
    """One `get` past L1: what its helpers need."""

    key: str
    full: str
    loader: Loader[Any]
    ttl: float
    memory_ttl: float
    tags: tuple[str, ...]
    opts: _Options
    start: float
    skip_memory: bool = False


def _early_info(
    opts: _Options, expires_at: float, load_time: float
) -> tuple[float, float, float] | None:
    """What an L1 copy keeps for XFetch draws on L1 hits (None: early refresh is off)."""
    if opts.early_refresh > 0 and load_time > 0:
        return (expires_at, load_time, opts.early_refresh)
    return None


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
        tracking: bool = False,
        single_flight: bool = True,
        strict: bool = False,
        clock: Callable[[], float] = time.time,
        early_refresh: float | None = None,
        grace: float = 0.0,
        soft_timeout: float = 0.0,
        hard_timeout: float | None = None,
        lock: DistributedLock | None = None,
        jitter: Jitter | None = None,
        sliding: bool = False,
        rng: random.Random | None = None,
        op_timeout: float | None = DEFAULT_OP_TIMEOUT,
        breaker: CircuitBreaker | bool = True,
        max_value_bytes: int | None = None,
    ) -> None:
        """Stampede and TTL options (module `labcache.stampede`, `labcache.ttl`):

        `early_refresh` XFetch beta (None: off); `grace` seconds an expired entry is kept and
        served stale while one background refresh runs (also when the loader fails: fail-safe);
        `soft_timeout` how long a stale read waits for that refresh first; `hard_timeout` how
        long a read with nothing stale waits for a load (then asyncio.TimeoutError); `lock` a
        DistributedLock so one process of many loads a miss; `jitter` spreads TTLs; `sliding`
        renews the TTL on each read that reaches Redis; `rng` XFetch's random source (default:
        unseeded, so that instances draw independently; seed it only to repeat a run).

        Failure options (module `labcache.breaker`): `op_timeout` seconds any one Redis call
        may take (None: the client's own timeout); `breaker` True for a default CircuitBreaker,
        False for none, or one to share between caches on the same Redis; `max_value_bytes`
        the largest value (serialised) that is cached; larger ones are served, not cached.
        """
        self.redis = redis
        self.on_cluster = is_cluster(redis)  # tags and the backplane differ on a Redis Cluster
        if self.on_cluster and tracking:
            raise ClusterUnsupported(TRACKING_UNSUPPORTED)
        self.namespace = namespace
        self.default_ttl = positive_seconds(default_ttl, "default_ttl")
        self.memory_ttl = positive_seconds(memory_ttl, "memory_ttl")
        self.negative_ttl = None if negative_ttl is None else positive_seconds(negative_ttl)
        self.serializer = serializer or JsonSerializer()
        self.strict = strict
        self.clock = clock
        self.stats = LevelStats()
        self.events = EventHub()
        self.l1: TLRUCache[str, L1Entry] = self._new_l1(l1_maxsize, l1_maxbytes)
        self.op_timeout = None if op_timeout is None else positive_seconds(op_timeout, "op_timeout")
        self.max_value_bytes = optional_whole(max_value_bytes, "max_value_bytes")
        self.breaker = coerce(breaker, cluster=self.on_cluster)
        if self.breaker is not None:
            self.breaker.subscribe(lambda kind, why: self._emit(kind, "*", L2, None, detail=why))
        self._flight = SingleFlight() if single_flight else None
        self.refreshes = SingleFlight()  # background refreshes: one per key, cancelled on close
        self.stampede_stats = StampedeStats()
        self.xfetch = XFetch(early_refresh or 1.0, rng)
        self.grace = seconds(grace, "grace")
        self.lock = lock
        self.jitter = jitter
        beta = 0.0 if early_refresh is None else non_negative(early_refresh, "early_refresh")
        hard = None if hard_timeout is None else positive_seconds(hard_timeout, "hard_timeout")
        soft = seconds(soft_timeout, "soft_timeout")
        self._defaults = _Options(beta, self.grace, soft, hard, bool(sliding))
        self._slider: Sliding | None = None
        self.backplane = (
            (ClusterBackplane if self.on_cluster else Backplane)(
                redis,
                f"{namespace}__invalidate__",
                on_keys=self._evict_keys,
                on_pattern=self._evict_pattern,
                on_reset=self._evict_all,
            )
            if backplane
            else None
        )
        self.tracking = (
            KeyTracking(redis, namespace, on_keys=self._evict_keys, on_flush=self._evict_all)
            if tracking
            else None
        )

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> MultiLevelCache:
        """Start the backplane (and server-assisted tracking, if on); needs a running loop."""
        if self.backplane is not None:
            await self.backplane.start()
        if self.tracking is not None:
            await self.tracking.start()
        return self

    async def close(self) -> None:
        """Stop every background task this cache started (refreshes, loads, listeners)."""
        await self.refreshes.cancel()
        if self._flight is not None:
            await self._flight.cancel()
        if self.lock is not None:
            await self.lock.close()
        if self.backplane is not None:
            await self.backplane.stop()
        if self.tracking is not None:
            await self.tracking.stop()

    async def __aenter__(self) -> MultiLevelCache:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def in_flight(self) -> int:
        """Loads and background refreshes running now (0 after `close()`)."""
        return len(self.refreshes) + (len(self._flight) if self._flight is not None else 0)

    def waiting(self, key: str) -> int:
        """How many requests are waiting right now on a load or refresh of `key`."""
        full = self.key(key)
        shared = 0 if self._flight is None else self._flight.waiting(full)
        return shared + self.refreshes.waiting(full)

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
        early_refresh: float | None = None,
        grace: float | None = None,
        soft_timeout: float | None = None,
        hard_timeout: float | None = None,
        sliding: bool | None = None,
    ) -> T:
        """L1, then Redis, then the loader; the loaded value is stored in both levels.

        The stampede/staleness options override the cache's (see `__init__`) for this read.
        An expired value served within `grace` emits STALE (instead of HIT) with the reason.
        """
        full = self.namespace + key if key.__class__ is str else self.key(key)
        start = time.perf_counter() if self.events else 0.0
        if not skip_memory:
            try:
                item = self.l1[full]
            except KeyError:
                pass
            else:
                if ttl is not None or memory_ttl is not None:  # bad TTLs fail on every path
                    self._ttls(ttl, memory_ttl)
                self.stats.l1_hits += 1
                if self.events:
                    self._emit(HIT, key, L1, start)
                # XFetch draws on L1 hits too, with no Redis call; a read is built only if it fires.
                early = item.early
                if early is not None and (beta := self._l1_draw(early, full, early_refresh)):
                    chosen = (beta, grace, soft_timeout, hard_timeout, sliding)
                    read = self._new_read(key, full, loader, ttl, memory_ttl, tags, chosen, start)
                    expires_at, load_time, _ = early
                    self._refresh_early(read, expires_at, load_time, self.clock(), recheck=True)
                value: T = item.value
                return value
        validate_key(key)
        overrides = (early_refresh, grace, soft_timeout, hard_timeout, sliding)
        read = self._new_read(key, full, loader, ttl, memory_ttl, tags, overrides, start)
        read.skip_memory = skip_memory
        ttl, memory_ttl, opts = read.ttl, read.memory_ttl, read.opts
        try:
            if opts.sliding:
                slider = self._slider or self._new_slider()
                slide = slider.get(full, now=self.clock(), ttl=ttl, grace=opts.grace)
                data = await guarded(self.breaker, slide, self.op_timeout)
            else:
                get = self.redis.get(full)
                data = cast("bytes | None", await guarded(self.breaker, get, self.op_timeout))
        except REDIS_FAILURES as exc:
            return await self._fallback(key, full, loader, exc, start, min(ttl, memory_ttl))
        last_load = None
        if data is not None:
            found = self._decode(full, data)
            if found is not None:
                value, record = found
                now = self.clock()
                if now < record.expires_at:
                    expires_at, load_time = record.expires_at, record.load_time
                    if self._draw_fires(full, expires_at, load_time, opts.early_refresh, now):
                        self._refresh_early(read, expires_at, load_time, now)
                    if not skip_memory:
                        bound = self._l1_bound(opts, memory_ttl, now, expires_at, ttl)
                        early = _early_info(opts, expires_at, load_time)
                        self._fill_l1(full, value, bound, len(data), early)
                    self.stats.l2_hits += 1
                    self._emit(HIT, key, L2, start)
                    return value
                if now < record.expires_at + opts.grace:
                    value = await self._serve_stale(read, value, record)
                    return value
                last_load = record.load_time
            else:
                await self._drop(full)
        value = await self._miss(read, last_load)
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
        ttl = self.jitter(ttl) if self.jitter is not None else ttl
        self.l1.pop(full, None)
        size, expires_at = await self._write(full, value, ttl, 0.0, tags)
        bound = self._l1_bound(self._defaults, memory_ttl, self.clock(), expires_at, ttl)
        self._fill_l1(full, value, bound, size)
        await self._publish("keys", [full])

    async def invalidate(self, *keys: str) -> int:
        """Drop keys from Redis and from every instance's L1; return how many Redis had."""
        fulls = [self.key(k) for k in keys]
        if not fulls:
            return 0
        self._evict_keys(fulls)
        removed = int(await guarded(self.breaker, self.redis.unlink(*fulls), self.op_timeout))
        await self._publish("keys", fulls)
        self._count_invalidation(",".join(keys), removed)
        return removed

    async def invalidate_pattern(self, pattern: str, *, count: int = 1000) -> int:
        """Drop every key matching a Redis glob (within the namespace) in Redis and every L1."""
        full_pattern = glob_escape(self.namespace) + pattern  # a `[` in a namespace is literal
        self._evict_pattern(full_pattern)
        walk = unlink_matching(self.redis, full_pattern, count=count)
        removed = await guarded(self.breaker, walk, None)  # many calls: socket_timeout each
        await self._publish("pattern", full_pattern)
        self._count_invalidation(pattern, removed)
        return removed

    async def invalidate_tag(self, tag: str) -> list[str]:
        """Drop exactly the keys set with `tags=[tag]`, everywhere; return them."""
        if self.on_cluster:  # members live in other slots than the tag set: no single script
            drop = cluster_invalidate_tag(self.redis, self.tag_key(tag))
        else:
            drop = self.redis.register_script(_INVALIDATE_TAG)(keys=[self.tag_key(tag)])
        taken = await guarded(self.breaker, drop, self.op_timeout)
        members = [m.decode() for m in taken]
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

    def encode_entry(
        self, key: str, value: Any, ttl: float | None = None, load_time: float = 0.0
    ) -> tuple[str, bytes, int]:
        """The Redis key, record and PX (ms) that storing `value` writes (for pipelined writes)."""
        full = self.key(key)
        ttl = self.default_ttl if ttl is None else positive_seconds(ttl)
        data = entry.encode(dumps_for(self.serializer, full, value), self.clock() + ttl, load_time)
        return full, data, ttl_ms(ttl + self.grace)  # kept `grace` longer as a stale fallback

    def fill_l1(
        self,
        key: str,
        value: Any,
        *,
        expires_at: float,
        memory_ttl: float | None = None,
        size: int = 0,
    ) -> None:
        """Keep a copy of a value written to Redis; it expires by `expires_at` (the cache clock)."""
        _, memory_ttl = self._ttls(None, memory_ttl)
        remaining = expires_at - self.clock()
        if remaining > 0:
            self._fill_l1(self.key(key), value, min(memory_ttl, remaining), size)

    # -- internals ---------------------------------------------------------------------------

    def _ttls(self, ttl: float | None, memory_ttl: float | None) -> tuple[float, float]:
        return (
            self.default_ttl if ttl is None else positive_seconds(ttl),
            self.memory_ttl if memory_ttl is None else positive_seconds(memory_ttl, "memory_ttl"),
        )

    def _new_l1(self, maxsize: int, maxbytes: int | None) -> TLRUCache[str, L1Entry]:
        if maxbytes is not None:
            return TLRUCache(maxbytes, _l1_expiry, timer=self.clock, getsizeof=lambda e: e.size)
        whole(maxsize, "l1_maxsize")
        return TLRUCache(maxsize, _l1_expiry, timer=self.clock)

    def _fill_l1(
        self,
        full: str,
        value: Any,
        ttl: float,
        size: int,
        early: tuple[float, float, float] | None = None,
    ) -> None:
        if ttl <= 0:
            return
        # A value larger than the whole L1 byte budget is served, not kept.
        with contextlib.suppress(ValueError):
            self.l1[full] = L1Entry(value, self.clock() + ttl, size, early)

    def _new_read(
        self,
        key: str,
        full: str,
        loader: Loader[Any],
        ttl: float | None,
        memory_ttl: float | None,
        tags: Iterable[str],
        overrides: tuple[Any, ...],
        start: float,
    ) -> _Read:
        """A read's settings, validated: its TTLs, its stampede options and its tags."""
        ttl, memory_ttl = self._ttls(ttl, memory_ttl)
        opts = self._options(*overrides)
        tags = tuple(tags)
        if opts.sliding and tags:
            raise ValueError("sliding expiration cannot be combined with tags: a tag set would "
                             "expire before the members that reads keep renewing")  # fmt: skip
        return _Read(key, full, loader, ttl, memory_ttl, tags, opts, start)

    def _decode(self, full: str, data: bytes) -> tuple[Any, entry.Entry] | None:
        try:
            record = entry.decode(data, full)
            return loads_for(self.serializer, full, record.payload), record
        except CorruptEntry as exc:
            logger.warning("%s; treating it as a miss and deleting it", exc)
            self.stats.errors += 1
            self._emit(ERROR, full, L2, None, detail=str(exc))
            return None

    async def _drop(self, full: str) -> None:
        try:
            await guarded(self.breaker, self.redis.unlink(full), self.op_timeout)
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
        opts: _Options | None = None,
    ) -> T:
        start = time.perf_counter()
        began = self.clock()  # the record's load time is on the cache clock: XFetch's delta
        self.stats.loads += 1
        try:
            value = await loader()
        except Exception as exc:  # the caller gets it; a monitor should see it too
            self._emit(ERROR, key, SOURCE, None, detail=f"loader: {type(exc).__name__}: {exc}")
            raise
        finally:
            elapsed = time.perf_counter() - start
            self.stats.load_time += elapsed
            self._emit(LOAD, key, SOURCE, start)
        if value is None and self.negative_ttl is None:
            return value
        store_ttl = ttl if value is not None else self.negative_ttl
        assert store_ttl is not None
        if self.jitter is not None:
            store_ttl = self.jitter(store_ttl)
        delta = max(0.0, self.clock() - began)
        opts = opts or self._defaults
        try:
            size, expires_at = await self._write(full, value, store_ttl, delta, tags, opts.grace)
        except REDIS_FAILURES as exc:  # the value is good; only caching it failed (mistake 7)
            self._redis_error(key, exc)
            size, expires_at = 0, self.clock() + store_ttl
        except ValueTooLarge:  # served, not cached at any level (REJECTED was emitted)
            return value
        bound = self._l1_bound(opts, memory_ttl, self.clock(), expires_at, ttl)
        self._fill_l1(full, value, bound, size, _early_info(opts, expires_at, delta))
        return value

    async def _write(
        self,
        full: str,
        value: Any,
        ttl: float,
        load_time: float,
        tags: Iterable[str],
        grace: float | None = None,
    ) -> tuple[int, float]:
        """Store a record that expires in `ttl`; Redis keeps it `grace` longer (stale fallback).

        Returns its size and its expiry as stored (whole ms), which bounds the L1 copy.
        """
        payload = dumps_for(self.serializer, full, value)
        if self.max_value_bytes is not None and len(payload) > self.max_value_bytes:
            key = full[len(self.namespace) :]
            exc = too_large(key, len(payload), self.max_value_bytes)
            logger.warning("%s", exc)
            self._emit(REJECTED, key, L2, None, detail=str(exc))
            raise exc
        expires_at = round((self.clock() + ttl) * 1000) / 1000
        data = entry.encode(payload, expires_at, load_time)
        px = ttl_ms(ttl + (self.grace if grace is None else grace))
        tag_keys = [self.tag_key(t) for t in tags]
        write: Awaitable[Any]
        if tag_keys and self.on_cluster:  # two steps, not atomic: see labcache.cluster
            write = set_with_tags(self.redis, full, data, px, tag_keys)
        elif tag_keys:
            script = self.redis.register_script(_SET_WITH_TAGS)
            write = script(keys=[full, *tag_keys], args=[data, px])
        else:
            write = self.redis.set(full, data, px=px)
        await guarded(self.breaker, write, self.op_timeout)
        self.stats.sets += 1
        self._emit(SET, full, L2, None)
        return len(data), expires_at

    # -- stampede and staleness (the policies live in labcache.stampede / labcache.ttl) --------

    def _options(
        self,
        early_refresh: float | None,
        grace: float | None,
        soft_timeout: float | None,
        hard_timeout: float | None,
        sliding: bool | None,
    ) -> _Options:
        d = self._defaults
        overrides = (early_refresh, grace, soft_timeout, hard_timeout, sliding)
        if overrides == (None, None, None, None, None):
            return d
        return _Options(
            d.early_refresh
            if early_refresh is None
            else non_negative(early_refresh, "early_refresh"),
            d.grace if grace is None else seconds(grace, "grace"),
            d.soft_timeout if soft_timeout is None else seconds(soft_timeout, "soft_timeout"),
            d.hard_timeout
            if hard_timeout is None
            else positive_seconds(hard_timeout, "hard_timeout"),
            d.sliding if sliding is None else bool(sliding),
        )

    def _new_slider(self) -> Sliding:
        self._slider = Sliding(self.redis)
        return self._slider

    def _draw_fires(
        self, full: str, expires_at: float, load_time: float, beta: float, now: float
    ) -> bool:
        """XFetch (the paper's rule): does this read's draw start the key's background refresh?"""
        if beta <= 0 or load_time <= 0 or self.refreshes.pending(full) is not None:
            return False
        return now >= self.xfetch.refresh_at(expires_at, load_time, beta)

    def _refresh_early(
        self, read: _Read, expires_at: float, load_time: float, now: float, *, recheck: bool = False
    ) -> None:
        """Start the refresh a draw chose. `recheck`: the draw was made on an L1 hit, so Redis
        may already hold a newer record (another instance refreshed it); look there first.
        """
        self.stampede_stats.early_refreshes += 1
        self._emit(EARLY_REFRESH, read.key, SOURCE, None, detail=f"{expires_at - now:.3f}s early")
        self._refresh(read, expires_at, load_time, recheck=recheck)

    def _l1_draw(
        self, early: tuple[float, float, float], full: str, early_refresh: float | None
    ) -> float:
        """An L1 hit's XFetch draw, as a Redis read would make it: the beta to refresh with if it
        fires, else 0. `early_refresh` is this read's own beta, if it gave one.
        """
        expires_at, load_time, beta = early
        if early_refresh is not None:
            beta = non_negative(early_refresh, "early_refresh")
        fires = self._draw_fires(full, expires_at, load_time, beta, self.clock())
        return beta if fires else 0.0

    async def _serve_stale(self, read: _Read, value: Any, record: entry.Entry) -> Any:
        """Within grace: one background refresh; wait up to the soft timeout, else serve stale."""
        refresh = self._refresh(read, record.expires_at, record.load_time)
        fresh, new, why = await wait_or_stale(refresh, read.opts.soft_timeout)
        if fresh:
            self.stats.misses += 1
            self._emit(MISS, read.key, SOURCE, read.start)
            return new
        self.stampede_stats.soft_timeouts += why == "soft timeout"
        self.stampede_stats.stale_served += 1
        self.stats.l2_hits += 1
        self._emit(STALE, read.key, L2, read.start, detail=why)
        return value

    def _refresh(
        self, read: _Read, expires_at: float, load_time: float, *, recheck: bool = False
    ) -> asyncio.Future[Any]:
        """Start (or join) the one background refresh of a key; tracked, cancelled on close.

        It replaces the record that expires at `expires_at`; with `recheck`, a newer one
        already in Redis (stored by another instance) is taken instead of loading again.
        """

        async def refresh() -> Any:
            try:
                if recheck:
                    newer = await self._reread(read, expires_at)
                    if newer is not MISSING:
                        return newer
                value, _ = await self._load(read, newer_than=expires_at, last_load=load_time)
                return value
            except Exception as exc:
                self.stampede_stats.refresh_errors += 1
                logger.warning("refreshing %r failed (%s: %s)", read.key, type(exc).__name__, exc)
                self._emit(ERROR, read.key, SOURCE, None, detail=f"refresh: {type(exc).__name__}")
                raise

        return self.refreshes.start(read.full, refresh)

    async def _miss(self, read: _Read, last_load: float | None) -> Any:
        """Nothing usable cached: load once (per process, or per fleet with a lock)."""
        hard = read.opts.hard_timeout
        idle = self._flight is not None and self._flight.pending(read.full) is None
        if idle and not read.skip_memory:
            try:  # a load of this key ended while our GET was in flight: use it, don't load again
                item = self.l1[read.full]
            except KeyError:
                pass
            else:
                self.stats.l1_hits += 1
                self._emit(HIT, read.key, L1, read.start, detail="filled during our read")
                return item.value

        async def load() -> tuple[Any, bool]:
            return await self._load(read, last_load=last_load)

        try:
            if self.refreshes.pending(read.full) is not None:  # a refresh is loading this key
                value, loaded = await self.refreshes.follow(read.full, timeout=hard), True
                self.stats.coalesced += 1
            elif self._flight is not None:
                (value, loaded), shared = await self._flight.run(read.full, load, timeout=hard)
                self.stats.coalesced += shared
            else:
                value, loaded = await asyncio.wait_for(load(), hard)
        except asyncio.TimeoutError:
            if hard is None:
                raise
            self.stampede_stats.hard_timeouts += 1
            self._emit(ERROR, read.key, SOURCE, read.start, detail=f"hard timeout {hard}s")
            raise LoadTimeout(
                f"{read.key!r}: no value within hard_timeout={hard}s and no stale copy to serve"
            ) from None
        if loaded:
            self.stats.misses += 1
            self._emit(MISS, read.key, SOURCE, read.start)
        else:
            self.stats.l2_hits += 1
            self._emit(HIT, read.key, L2, read.start, detail="after lock wait")
        return value

    async def _load(
        self, read: _Read, *, newer_than: float | None = None, last_load: float | None = None
    ) -> tuple[Any, bool]:
        """Load and store; with a lock, only if no other process did: `(value, loaded)`."""

        async def load() -> Any:
            return await self._load_and_store(
                read.key,
                read.full,
                read.loader,
                read.ttl,
                read.memory_ttl,
                read.tags,
                read.opts,
            )

        if self.lock is None:
            return await load(), True

        async def reread() -> Any:
            return await self._reread(read, newer_than)

        def on_wait(how: str, waited: float) -> None:
            if self.events:
                now = time.perf_counter()
                self.events.emit(CacheEvent(LOCK_WAIT, read.key, L2, waited, now, how))

        return await load_with_lock(
            self.lock,
            read.key,
            load,
            reread,
            ttl=self.lock.ttl_for(last_load),
            stats=self.stampede_stats,
            on_wait=on_wait,
        )

    async def _reread(self, read: _Read, newer_than: float | None) -> Any:
        """What another process stored while we waited, or MISSING (none, expired, or older)."""
        full = read.full
        try:
            get = self.redis.get(full)
            data = cast("bytes | None", await guarded(self.breaker, get, self.op_timeout))
        except REDIS_FAILURES as exc:
            self._redis_error(full, exc)
            return MISSING
        if data is None:
            return MISSING
        found = self._decode(full, data)
        if found is None:
            return MISSING
        value, record = found
        now = self.clock()
        if now >= record.expires_at or (newer_than is not None and record.expires_at <= newer_than):
            return MISSING
        bound = self._l1_bound(read.opts, read.memory_ttl, now, record.expires_at, read.ttl)
        early = _early_info(read.opts, record.expires_at, record.load_time)
        self._fill_l1(full, value, bound, len(data), early)
        return value

    def _l1_bound(
        self, opts: _Options, memory_ttl: float, now: float, expires_at: float, ttl: float
    ) -> float:
        sliding_ttl = ttl if opts.sliding else None
        return l1_ttl(memory_ttl, now, expires_at, sliding_ttl=sliding_ttl)

    async def _fallback(
        self,
        key: str,
        full: str,
        loader: Loader[T],
        exc: BaseException,
        start: float,
        l1_ttl: float,
    ) -> T:
        """Redis failed: ask the source once, keep the value briefly in L1, skip Redis.

        Concurrent fallbacks for one key share that load too: an outage is no time for a stampede.
        """
        self._redis_error(key, exc)  # raises in strict mode

        async def load() -> T:
            load_start = time.perf_counter()
            self.stats.loads += 1
            try:
                return await loader()
            finally:
                self.stats.load_time += time.perf_counter() - load_start

        if self._flight is None:
            value = await load()
        else:
            value, shared = await self._flight.run("fallback:" + full, load)
            self.stats.coalesced += shared
        if value is not None:
            self._fill_l1(full, value, l1_ttl, 0)
        self.stats.misses += 1
        self._emit(FALLBACK, key, SOURCE, start, detail=f"{type(exc).__name__}: {exc}")
        return value

    async def announce(self, full_keys: list[str]) -> None:
        """Tell every other instance to drop these Redis keys from its L1 (failures are events)."""
        await self._publish("keys", full_keys)

    async def _publish(self, op: str, arg: list[str] | str) -> None:
        if self.backplane is None:
            return
        try:  # no breaker: a notice that was not sent must leave a sequence gap behind
            await guarded(None, self.backplane.publish(op, arg), self.op_timeout)
        except REDIS_FAILURES as exc:
            self._redis_error(str(arg), exc)

    def _evict_keys(self, fulls: list[str]) -> None:
        for full in fulls:
            if self.l1.pop(full, None) is not None:
                self.stats.l1_evictions += 1
                self._emit(EVICT, full, L1, None)

    def _evict_pattern(self, full_pattern: str) -> None:
        regex = glob_to_regex(full_pattern)
        self._evict_keys([k for k in list(self.l1) if regex.match(k.encode())])

    def _evict_all(self, reason: str) -> None:
        self.stats.l1_evictions += len(self.l1)
        self.l1.clear()
        self._emit(EVICT, "*", L1, None, detail=reason)

    def _count_invalidation(self, what: str, removed: int) -> None:
        self.stats.invalidations += removed
        self._emit(INVALIDATE, what, L2, None, detail=str(removed))

    def _redis_error(self, key: str, exc: BaseException) -> None:
        # Skipped by the open breaker: still an error event (Redis was not usable for this
        # request), but logged quietly: the breaker logged the outage once, when it opened.
        log = logger.debug if isinstance(exc, CircuitOpen) else logger.warning
        log("Redis failed for %r: %s: %s", key, type(exc).__name__, exc)
        self.stats.errors += 1
        self._emit(ERROR, key, L2, None, detail=f"{type(exc).__name__}: {exc}")
        if self.strict:
            raise exc

    def _emit(self, kind: str, key: str, level: str, start: float | None, detail: str = "") -> None:
        if self.events:
            now = time.perf_counter()
            duration = 0.0 if start is None else now - start
            self.events.emit(CacheEvent(kind, key, level, duration, now, detail))
