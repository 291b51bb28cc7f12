"""L2: the Redis store every multi-level cache part reads and writes through.

One write path: `record()` encodes a value (serialiser, size limit, jitter, expiry, PX) and
`write()` / `write_many()` store records; `set`, a miss's store, warming, write-through and
write-behind all use them, so the same rules hold for every key a cache writes. Every Redis call
goes through `call()`: the circuit breaker and `op_timeout` of the cache's `Guard`. The one
exception is `unlink_matching`, a SCAN walk of many calls: each is bounded by the client's
socket timeout instead of one `op_timeout` for the whole walk.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, NamedTuple, Protocol, TypeVar, cast

import redis.asyncio as aioredis

from labcache import entry
from labcache.aside import REDIS_FAILURES, too_large, ttl_ms, unlink_matching
from labcache.breaker import coerce, guarded
from labcache.cluster import invalidate_tag as cluster_invalidate_tag
from labcache.cluster import is_cluster, set_with_tags
from labcache.events import ERROR, L2, REJECTED, SET, EventHub
from labcache.keys import validate_key
from labcache.policies import Guard
from labcache.serializers import CorruptEntry, Serializer, dumps_for, loads_for
from labcache.ttl import Jitter, Sliding

logger = logging.getLogger(__name__)
T = TypeVar("T")

# Batches for write_many/missing: one script call each (FACTS: ~29x one await per key).
BATCH = 1000

# Tag sets live as long as their longest-lived member. Members are KEYS[1]; tag sets KEYS[first..],
# PX ARGV[2]. Shared by the store's SET and write-behind's queued write (labcache.writes).
TAG_MEMBER = """for i = {first}, #KEYS do
  redis.call('SADD', KEYS[i], KEYS[1])
  if redis.call('PTTL', KEYS[i]) < tonumber(ARGV[2]) then
    redis.call('PEXPIRE', KEYS[i], ARGV[2])
  end
end
"""
# Atomic: a key set while a tag is invalidated is dropped with it or written after it.
SET_WITH_TAGS = "redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])\n" + TAG_MEMBER.format(first=2)
TAKE_TAG = """
local members = redis.call('SMEMBERS', KEYS[1])
for i = 1, #members, 1000 do
  redis.call('UNLINK', unpack(members, i, math.min(i + 999, #members)))
end
redis.call('DEL', KEYS[1])
return members
"""
# ARGV[1] 'NX' or '', then a record and its PX per key: 1 where it was stored.
SET_MANY = """
local stored, nx = {}, ARGV[1] == 'NX'
for i = 1, #KEYS do
  local ok
  if nx then
    ok = redis.call('SET', KEYS[i], ARGV[2 * i], 'PX', ARGV[2 * i + 1], 'NX')
  else
    ok = redis.call('SET', KEYS[i], ARGV[2 * i], 'PX', ARGV[2 * i + 1])
  end
  stored[i] = ok and 1 or 0
end
return stored
"""
EXISTS_EACH = """
local found = {}
for i = 1, #KEYS do found[i] = redis.call('EXISTS', KEYS[i]) end
return found
"""


class Counts(Protocol):
    """The stats a store counts into (its cache's)."""

    sets: int
    errors: int


class Record(NamedTuple):
    """A value encoded for Redis: what `write()` stores and what bounds an L1 copy."""

    full: str  # the Redis key
    data: bytes  # the labcache record (labcache.entry)
    px: int  # Redis lifetime, ms: the TTL plus the grace period
    expires_at: float  # the record's expiry, as stored (whole ms, the cache clock)


class Found(NamedTuple):
    """A record read back: its value, expiry, load time and size in bytes."""

    value: Any
    expires_at: float
    load_time: float
    size: int


class RedisStore:
    """The Redis level of a cache: keys under `namespace`, records, tags, all guarded."""

    def __init__(
        self,
        redis: aioredis.Redis,
        namespace: str,
        serializer: Serializer,
        clock: Callable[[], float],
        guard: Guard,
        events: EventHub,
        stats: Counts,
        *,
        jitter: Jitter | None = None,
        grace: float = 0.0,
    ) -> None:
        self.redis = redis
        self.namespace = namespace
        self.serializer = serializer
        self.clock = clock
        self.on_cluster = is_cluster(redis)  # tags, scripts and pub/sub differ on a cluster
        self.op_timeout = guard.op_timeout
        self.max_value_bytes = guard.max_value_bytes
        self.breaker = coerce(guard.breaker, cluster=self.on_cluster)
        self.events = events
        self.stats = stats
        self.jitter = jitter
        self.grace = grace
        if self.breaker is not None:
            self.breaker.subscribe(lambda kind, why: events.report(kind, "*", L2, None, why))
        self._set_with_tags = redis.register_script(SET_WITH_TAGS)
        self._take_tag = redis.register_script(TAKE_TAG)
        self._set_many = redis.register_script(SET_MANY)
        self._exists_each = redis.register_script(EXISTS_EACH)
        self._slider: Sliding | None = None

    # -- keys ---------------------------------------------------------------------------------

    def key(self, key: str) -> str:
        """The Redis key for a cache key (a bad key is a ValueError here, before any call)."""
        return self.namespace + validate_key(key)

    def short(self, full: str) -> str:
        """The cache key of a Redis key (what events and callers see)."""
        n = len(self.namespace)
        return full[n:] if full[:n] == self.namespace else full

    def tag_key(self, tag: str) -> str:
        return f"{self.namespace}__tag__:{tag}"

    # -- every call ---------------------------------------------------------------------------

    async def call(self, awaitable: Awaitable[T]) -> T:
        """Run one Redis call under the breaker and `op_timeout`."""
        return await guarded(self.breaker, awaitable, self.op_timeout)

    # -- reading ------------------------------------------------------------------------------

    async def read(self, full: str) -> Found | None:
        """The record under `full`; None if there is none (a corrupt one is deleted: a miss)."""
        data = cast(
            "bytes | None", await guarded(self.breaker, self.redis.get(full), self.op_timeout)
        )
        if data is None:
            return None
        try:  # parsed here, not in decode(): one coroutine less on every L2 hit
            return self.parse(full, data)
        except CorruptEntry as exc:
            await self._drop_corrupt(full, exc)
            return None

    async def read_sliding(self, full: str, *, ttl: float, grace: float) -> Found | None:
        """Like `read`, renewing a fresh record's expiry to now + `ttl` in the same trip."""
        if self._slider is None:
            self._slider = Sliding(self.redis)
        slide = self._slider.get(full, now=self.clock(), ttl=ttl, grace=grace)
        data = await self.call(slide)
        return None if data is None else await self.decode(full, data)

    async def decode(self, full: str, data: bytes) -> Found | None:
        """The record in `data`; None for a corrupt one, which is deleted (a miss)."""
        try:
            return self.parse(full, data)
        except CorruptEntry as exc:
            await self._drop_corrupt(full, exc)
            return None

    def parse(self, full: str, data: bytes) -> Found:
        """The record in `data`, or CorruptEntry."""
        record = entry.decode(data, full)
        value = loads_for(self.serializer, full, record.payload)
        return Found(value, record.expires_at, record.load_time, len(data))

    async def _drop_corrupt(self, full: str, exc: CorruptEntry) -> None:
        logger.warning("%s; treating it as a miss and deleting it", exc)
        self.stats.errors += 1
        self.events.report(ERROR, self.short(full), L2, None, str(exc))
        try:
            await self.call(self.redis.unlink(full))
        except REDIS_FAILURES as failure:  # the next read finds it and tries again
            logger.warning("could not delete %r: %s", full, failure)

    # -- the write path -----------------------------------------------------------------------

    def record(
        self,
        full: str,
        value: Any,
        ttl: float,
        *,
        load_time: float = 0.0,
        grace: float | None = None,
        jitter: Jitter | bool | None = True,
    ) -> Record:
        """Encode `value` to expire in `ttl` seconds (jittered); Redis keeps it `grace` longer.

        A value over `max_value_bytes` emits REJECTED and raises ValueTooLarge: served, not
        cached. `jitter=True` uses the store's own; pass a Jitter or None to choose.
        """
        payload = dumps_for(self.serializer, full, value)
        if self.max_value_bytes is not None and len(payload) > self.max_value_bytes:
            exc = too_large(self.short(full), len(payload), self.max_value_bytes)
            logger.warning("%s", exc)
            self.events.report(REJECTED, self.short(full), L2, None, str(exc))
            raise exc
        spread = self.jitter if jitter is True else jitter or None
        if spread is not None:
            ttl = spread(ttl)
        expires_at = round((self.clock() + ttl) * 1000) / 1000
        px = ttl_ms(ttl + (self.grace if grace is None else grace))
        return Record(full, entry.encode(payload, expires_at, load_time), px, expires_at)

    async def write(self, record: Record, tags: Iterable[str] = ()) -> None:
        """Store one record, added to its tag sets in the same step."""
        tag_keys = [self.tag_key(t) for t in tags]
        write: Awaitable[Any]
        if tag_keys and self.on_cluster:  # two steps, not atomic: see labcache.cluster
            write = set_with_tags(self.redis, record.full, record.data, record.px, tag_keys)
        elif tag_keys:
            write = self._set_with_tags(
                keys=[record.full, *tag_keys], args=[record.data, record.px]
            )
        else:
            write = self.redis.set(record.full, record.data, px=record.px)
        await self.call(write)
        self.stats.sets += 1
        self.events.report(SET, self.short(record.full), L2)

    async def write_many(
        self, records: Sequence[Record], *, only_new: bool = False, detail: str = ""
    ) -> list[bool]:
        """Store many records, one script call per BATCH (NX with `only_new`): which were set."""
        stored: list[bool] = []
        for i in range(0, len(records), BATCH):
            batch = records[i : i + BATCH]
            if self.on_cluster:  # one script needs one slot: a pipeline splits per node instead
                replies = await self.call(self._pipelined(batch, only_new))
            else:
                # Bytes, not str and int: redis-py packs them as they are (a third of the cost).
                args: list[Any] = [b"NX" if only_new else b""]
                for r in batch:
                    args += (r.data, b"%d" % r.px)
                keys = [r.full.encode() for r in batch]
                replies = await self.call(self._set_many(keys=keys, args=args))
            stored += [bool(reply) for reply in replies]
        self.stats.sets += sum(stored)
        if self.events:
            for record, ok in zip(records, stored, strict=True):
                if ok:
                    self.events.report(SET, self.short(record.full), L2, None, detail)
        return stored

    async def missing(self, fulls: Sequence[str]) -> list[bool]:
        """For each key, whether Redis lacks it (one script call per BATCH)."""
        found: list[Any] = []
        for i in range(0, len(fulls), BATCH):
            batch = list(fulls[i : i + BATCH])
            if self.on_cluster:
                found += await self.call(self._each(batch))
            else:
                found += await self.call(self._exists_each(keys=[f.encode() for f in batch]))
        return [not f for f in found]

    # -- removing -----------------------------------------------------------------------------

    async def unlink(self, *fulls: str) -> int:
        return int(await self.call(self.redis.unlink(*fulls)))

    async def unlink_matching(self, pattern: str, *, count: int = 1000) -> int:
        """UNLINK every key matching a glob with SCAN (many calls: socket timeout each)."""
        walk = unlink_matching(self.redis, pattern, count=count)
        return await guarded(self.breaker, walk, None)

    async def take_tag(self, tag: str) -> list[str]:
        """Drop a tag's members and the tag set; return the members (Redis keys)."""
        if self.on_cluster:  # members live in other slots than the tag set: no single script
            drop = cluster_invalidate_tag(self.redis, self.tag_key(tag))
        else:
            drop = self._take_tag(keys=[self.tag_key(tag)])
        return [m.decode() for m in await self.call(drop)]

    # -- cluster fallbacks --------------------------------------------------------------------

    async def _pipelined(self, batch: Sequence[Record], only_new: bool) -> list[Any]:
        async with self.redis.pipeline(transaction=False) as pipe:
            for r in batch:
                pipe.set(r.full, r.data, px=r.px, nx=only_new)
            return list(await pipe.execute())

    async def _each(self, fulls: list[str]) -> list[Any]:
        async with self.redis.pipeline(transaction=False) as pipe:
            for full in fulls:
                pipe.exists(full)
            return list(await pipe.execute())
