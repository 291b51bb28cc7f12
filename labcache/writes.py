"""Part 7: write-through and write-behind (the lab promises write-through and never writes it: 14).

- Write-through: the database first, then the cache, in one call. If the database write fails the
  cache is untouched and the error propagates; if the cache write fails the key is invalidated
  everywhere, so no reader takes the old value for fresh.
- Write-behind: the cache now, the database later. The cache SET and an XADD to a Redis Stream
  run in one Lua script; a flusher (a consumer group) applies the queued writes in batches and
  acknowledges them only after the database commit. Each entry carries the row's whole new state
  and a version, so a replayed or reordered entry never overwrites a newer write. What `lag()`
  counts lives only in Redis: that is the data-loss window.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import weakref
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from labcache.aside import REDIS_FAILURES
from labcache.cluster import ClusterUnsupported
from labcache.events import ERROR, L2, CacheEvent
from labcache.flusher import BatchSink, Flusher, FlushStats, Lag
from labcache.multilevel import MultiLevelCache
from labcache.stats import Counters
from labcache.store import TAG_MEMBER
from labcache.validate import positive_seconds

logger = logging.getLogger(__name__)
T = TypeVar("T")
Row = dict[str, Any]


class WriteSink(BatchSink, Protocol):
    """The database write-through and write-behind write to, by table and row id.

    Write-through calls `update`, which commits and returns the new row. Write-behind checks
    changes before queueing them (`validate_changes`: ValueError for a bad one; `updatable`:
    the fields of a row it queues), reads the current row (`read`), applies the changes to it
    in memory (`merge`: the row the database will hold once they are applied, which the cache
    serves meanwhile; `merge_changes` does it for most rows), and its flusher applies the
    queue (`apply_writes`). The course's `InsuranceDB` is one.
    """

    async def read(self, table: str, row_id: str | int, /) -> Row | None: ...
    async def update(self, table: str, row_id: str | int, /, **changes: Any) -> Row: ...
    def merge(self, table: str, current: Row, changes: Mapping[str, Any], /) -> Row: ...
    def updatable(self, table: str) -> frozenset[str]: ...
    def validate_changes(
        self, table: str, changes: Mapping[str, Any], *, check_references: bool = True
    ) -> dict[str, Any]: ...


def merge_changes(current: Row, changes: Mapping[str, Any]) -> Row:
    """`current` with `changes` applied, for `WriteSink.merge`: nested mappings merge by field.

    An int `version` goes up by one, as the database's will once the write is applied.
    """
    new = dict(current)
    for name, value in changes.items():
        old = new.get(name)
        new[name] = (
            {**old, **value} if isinstance(old, dict) and isinstance(value, Mapping) else value
        )
    if isinstance(new.get("version"), int):
        new["version"] += 1
    return new


def _key_kinds(keys: Mapping[str, str] | None) -> dict[str, str]:
    kinds = dict(keys or {})
    for table, kind in kinds.items():
        if not isinstance(kind, str) or not kind:
            raise ValueError(f"keys[{table!r}] must be a non-empty string, got {kind!r}")
    return kinds


def _row_key(keys: Mapping[str, str], table: str, row_id: str | int) -> str:
    """The cache key of a row, `<kind>:<id>`, with the kind that `keys` gives its table."""
    if table not in keys:
        raise ValueError(
            f"no cache key for table {table!r}: this writer's keys= maps "
            f"{sorted(keys) or 'no table'}; add {table!r} (e.g. keys={{{table!r}: 'row'}})"
        )
    return f"{keys[table]}:{row_id}"


# SET + tags + XADD as one step: no reader sees the new value without its write being queued.
# The version counter starts from the server clock (µs), so a Redis that lost it still counts up
# past every version the database ledger has already applied.
# KEYS: cache key, stream, version counter, tag sets. ARGV: record, PX, key, table, id, fields.
_QUEUE_HEAD = """
if redis.call('EXISTS', KEYS[3]) == 0 then
  local t = redis.call('TIME')
  redis.call('SET', KEYS[3], t[1] .. string.format('%06d', tonumber(t[2])))
end
local version = string.format('%d', redis.call('INCR', KEYS[3]))
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
"""
_QUEUE_TAIL = """local id = redis.call('XADD', KEYS[2], '*', 'key', ARGV[3], 'table', ARGV[4],
                      'id', ARGV[5], 'fields', ARGV[6], 'version', version)
return {id, version}
"""
QUEUE_WRITE = _QUEUE_HEAD + TAG_MEMBER.format(first=4) + _QUEUE_TAIL


class _KeyLocks:
    """One asyncio.Lock per key, forgotten once nobody holds or awaits it."""

    def __init__(self) -> None:
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()

    def __call__(self, key: str) -> asyncio.Lock:
        lock = self._locks.get(key)
        if lock is None:
            lock = self._locks[key] = asyncio.Lock()
        return lock


def _error_event(cache: MultiLevelCache, key: str, level: str, detail: str) -> None:
    logger.warning("%s: %s", key, detail)
    cache.events.emit(CacheEvent(ERROR, key, level, 0.0, time.perf_counter(), detail))


async def _announce(cache: MultiLevelCache, full: str) -> None:
    """Best effort: tell the other instances to drop their L1 copy of `full`."""
    await cache.announce([full])


# -- write-through ---------------------------------------------------------------------------


@dataclass
class ThroughStats(Counters):
    """What the write-through calls did, since the object was made."""

    writes: int = 0  # database writes that committed
    db_failures: int = 0  # database writes that raised: the cache was not touched
    cache_failures: int = 0  # cache writes that failed after the commit: the key was invalidated
    invalidation_failures: int = 0  # ...and the invalidation failed too: a stale window is open


class WriteThrough:
    """The database first, then the cache, in one call.

    If the cache write fails after the commit, the key is invalidated (L1, Redis, other
    instances through the backplane). If that fails too (Redis down), this instance's L1 has
    already dropped the key and an `error` event says so, but the old value stays in Redis until
    its TTL runs out: other readers can take it for fresh for up to that TTL (their L1 copies
    expire no later, and a backplane that lost its connection flushes L1 on reconnect).
    Writes to one key through one object are serialised, so the cache ends with the value of the
    last database write; across processes two writers can still interleave (DB A, DB B, cache B,
    cache A): give such keys a short TTL or invalidate instead of writing.

    `keys` maps a table to its key kind: with `{"orders": "order"}`, `update("orders", 7, ...)`
    caches the row under `order:7`. `write` needs no mapping.
    """

    def __init__(
        self,
        cache: MultiLevelCache,
        db: WriteSink,
        *,
        keys: Mapping[str, str] | None = None,
        ttl: float | None = None,
    ):
        self.cache = cache
        self.db = db
        self.keys = _key_kinds(keys)
        self.ttl = None if ttl is None else positive_seconds(ttl)
        self.stats = ThroughStats()
        self._locks = _KeyLocks()

    async def write(
        self,
        key: str,
        save: Callable[[], Awaitable[T]],
        *,
        ttl: float | None = None,
        tags: Iterable[str] = (),
        drop_tags: Iterable[str] = (),
    ) -> T:
        """Run `save` (the database write; it returns the new value), then cache that value.

        `tags` are the new entry's tags; `drop_tags` are related tags invalidated in the same call
        (e.g. a cached list the written row has just left).
        """
        self.cache.key(key)  # a bad key fails before the database is touched
        ttl = self.ttl if ttl is None else positive_seconds(ttl)
        tags, drop_tags = list(tags), list(drop_tags)
        async with self._locks(key):
            try:
                value = await save()
            except Exception:
                self.stats.db_failures += 1
                raise
            self.stats.writes += 1
            await self._store(key, value, ttl, tags)
        for tag in drop_tags:
            try:
                await self.cache.invalidate_tag(tag)
            except REDIS_FAILURES as exc:
                self.stats.invalidation_failures += 1
                _error_event(self.cache, f"tag:{tag}", L2, f"dropping the tag failed: {exc!r}")
        return value

    async def update(
        self,
        table: str,
        row_id: str | int,
        /,
        *,
        ttl: float | None = None,
        tags: Iterable[str] = (),
        drop_tags: Iterable[str] = (),
        **changes: Any,
    ) -> Row:
        """`WriteSink.update`, then cache the row it returns under the table's key (`keys`)."""
        return await self.write(
            _row_key(self.keys, table, row_id),  # an unknown table fails before the database
            lambda: self.db.update(table, row_id, **changes),
            ttl=ttl,
            tags=tags,
            drop_tags=drop_tags,
        )

    async def _store(self, key: str, value: Any, ttl: float | None, tags: list[str]) -> None:
        try:
            await self.cache.set(key, value, ttl=ttl, tags=tags)
            return
        except Exception as exc:  # Redis down, a refused SET (ACL, OOM), a value that won't encode
            failure = exc
        self.stats.cache_failures += 1
        why = f"{type(failure).__name__}: {failure}"
        _error_event(self.cache, key, L2, f"cache write failed after the commit ({why}); dropping")
        try:
            await self.cache.invalidate(key)
        except REDIS_FAILURES as exc:
            self.stats.invalidation_failures += 1
            window = self.cache.default_ttl if ttl is None else ttl
            _error_event(
                self.cache,
                key,
                L2,
                f"invalidation failed too ({type(exc).__name__}); L1 dropped here, but Redis "
                f"may serve the old value until it expires (up to {window:g} s)",
            )
            await _announce(self.cache, self.cache.key(key))
        if not isinstance(failure, REDIS_FAILURES):
            raise failure  # a programming error (e.g. a value that is not JSON): say it loudly


# -- write-behind: the queue and its flusher -------------------------------------------------


class WriteBehind:
    """The cache now, the database later: writes queue in a Redis Stream, a flusher applies them.

    The danger is the window `lag()` measures: until a write is flushed it exists only in
    Redis. Run that Redis with AOF (`appendonly yes`) and keep cache TTLs far longer than the
    lag, with no evicting `maxmemory-policy`: a key that expires before its write is flushed
    is reloaded from the database, which still has the old value.

    `keys` maps a table to its key kind, as for `WriteThrough`; `write` needs no mapping.
    """

    def __init__(
        self,
        cache: MultiLevelCache,
        db: WriteSink,
        *,
        keys: Mapping[str, str] | None = None,
        stream: str = "__writes__",
        group: str = "flushers",
        consumer: str | None = None,
        batch_size: int = 100,
        interval: float = 0.5,
        min_idle: float = 30.0,
        ttl: float | None = None,
    ) -> None:
        if cache.store.on_cluster:  # QUEUE_WRITE touches the key, the stream and tag sets at once
            raise ClusterUnsupported(
                "write-behind is not supported on a Redis Cluster: its script writes the cache "
                "key, the stream and the version counter in one step, which needs one slot"
            )
        self.cache = cache
        self.db = db
        self.keys = _key_kinds(keys)
        self.ttl = None if ttl is None else positive_seconds(ttl)
        self.stream = cache.namespace + stream
        self.version_key = f"{self.stream}:version"
        self.flusher = Flusher(
            cache.redis,
            db,
            self.stream,
            group=group,
            consumer=consumer,
            batch_size=batch_size,
            interval=interval,
            min_idle=min_idle,
        )
        self._script = cache.redis.register_script(QUEUE_WRITE)
        self._locks = _KeyLocks()

    @property
    def stats(self) -> FlushStats:
        return self.flusher.stats

    async def write(
        self,
        key: str,
        value: Any,
        *,
        table: str,
        row_id: str | int,
        fields: Mapping[str, Any],
        ttl: float | None = None,
        tags: Iterable[str] = (),
    ) -> int:
        """Cache `value` and queue `fields` (the row's new state) in one step; return the version.

        If Redis fails, nothing was cached or queued and the error propagates: the caller must
        know that the write did not happen.
        """
        self.db.validate_changes(table, fields, check_references=False)  # bad input fails now
        ttl = positive_seconds(
            next(t for t in (ttl, self.ttl, self.cache.default_ttl) if t is not None)
        )
        store = self.cache.store
        full = self.cache.key(key)
        record = store.record(full, value, ttl)  # jitter and the size limit, as for any write
        payload = json.dumps(dict(fields), sort_keys=True, separators=(",", ":"))
        tag_keys = [store.tag_key(t) for t in tags]
        queued = self._script(
            keys=[full, self.stream, self.version_key, *tag_keys],
            args=[record.data, record.px, key, table, str(row_id), payload],
        )
        _, version = await store.call(queued)
        self.stats.queued += 1
        self.cache.fill_l1(key, value, expires_at=record.expires_at, size=len(record.data))
        await _announce(self.cache, full)
        return int(version)

    async def update(
        self, table: str, row_id: str | int, /, *, ttl: float | None = None, **changes: Any
    ) -> Row:
        """Apply `changes` to the cached row now; the database gets them at the next flush.

        The current row comes from the cache (`WriteSink.read` on a miss), the new one from
        `WriteSink.merge`; the queued entry carries its `updatable` fields. Returns the new row.
        """
        key = _row_key(self.keys, table, row_id)
        self.db.validate_changes(table, changes, check_references=False)
        async with self._locks(key):  # read-modify-write: one update of a key at a time here
            current = await self.cache.get(
                key, lambda: self.db.read(table, row_id), ttl=self.ttl if ttl is None else ttl
            )
            if current is None:
                raise KeyError(f"no row with id {row_id!r} in {table}")
            new = self.db.merge(table, current, changes)
            state = {name: new[name] for name in self.db.updatable(table) if name in new}
            await self.write(key, new, table=table, row_id=row_id, fields=state, ttl=ttl)
            return new

    # -- the flusher, for convenience --------------------------------------------------------

    async def start(self) -> WriteBehind:
        """Start the background flusher (asyncio task)."""
        await self.flusher.start()
        return self

    async def stop(self, *, drain: bool = True, timeout: float = 30.0) -> None:
        """Stop the flusher after applying everything queued (unless `drain=False`)."""
        await self.flusher.stop(drain=drain, timeout=timeout)

    async def flush(self, timeout: float | None = 30.0) -> int:
        """Return once the database has every write queued so far."""
        return await self.flusher.flush(timeout)

    async def lag(self) -> Lag:
        """Writes not yet in the database, and the age of the oldest (the data-loss window)."""
        return await self.flusher.lag()

    async def __aenter__(self) -> WriteBehind:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
