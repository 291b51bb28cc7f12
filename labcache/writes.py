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

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
import time
import uuid
import weakref
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, TypeVar

import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from labcache.aside import REDIS_FAILURES, validate_ttl
from labcache.data import InsuranceDB, Row
from labcache.events import ERROR, L2, CacheEvent
from labcache.multilevel import MultiLevelCache

logger = logging.getLogger(__name__)
T = TypeVar("T")
Entry = tuple[bytes, dict[bytes, bytes]]  # (stream id, fields) as redis-py returns them

# SET + tags + XADD as one step: no reader sees the new value without its write being queued.
# The version counter starts from the server clock (µs), so a Redis that lost it still counts up
# past every version the database ledger has already applied.
# KEYS: cache key, stream, version counter, tag sets. ARGV: record, PX, key, table, id, fields.
QUEUE_WRITE = """
if redis.call('EXISTS', KEYS[3]) == 0 then
  local t = redis.call('TIME')
  redis.call('SET', KEYS[3], t[1] .. string.format('%06d', tonumber(t[2])))
end
local version = string.format('%d', redis.call('INCR', KEYS[3]))
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
for i = 4, #KEYS do
  redis.call('SADD', KEYS[i], KEYS[1])
  if redis.call('PTTL', KEYS[i]) < tonumber(ARGV[2]) then
    redis.call('PEXPIRE', KEYS[i], ARGV[2])
  end
end
local id = redis.call('XADD', KEYS[2], '*', 'key', ARGV[3], 'table', ARGV[4], 'id', ARGV[5],
                      'fields', ARGV[6], 'version', version)
return {id, version}
"""


class _KeyLocks:
    """One asyncio.Lock per key, forgotten once nobody holds or awaits it."""

    def __init__(self) -> None:
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()

    def __call__(self, key: str) -> asyncio.Lock:
        lock = self._locks.get(key)
        if lock is None:
            lock = self._locks[key] = asyncio.Lock()
        return lock


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _error_event(cache: MultiLevelCache, key: str, level: str, detail: str) -> None:
    logger.warning("%s: %s", key, detail)
    cache.events.emit(CacheEvent(ERROR, key, level, 0.0, time.perf_counter(), detail))


async def _announce(cache: MultiLevelCache, full: str) -> None:
    """Best effort: tell the other instances to drop their L1 copy of `full`."""
    await cache.announce([full])


def _merged(current: Row, changes: Mapping[str, Any]) -> Row:
    """`current` with `changes` applied; nested mappings (coverage, address) merge by field."""
    new = dict(current)
    for name, value in changes.items():
        old = new.get(name)
        new[name] = (
            {**old, **value} if isinstance(old, dict) and isinstance(value, Mapping) else value
        )
    if "customer_id" in changes:
        new.pop("holder", None)  # the holder's name is joined from the customer: reload it
    if isinstance(new.get("version"), int):
        new["version"] += 1  # what the database's version will be once the write is applied
    return new


# -- write-through ---------------------------------------------------------------------------


@dataclass
class ThroughStats:
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
    """

    def __init__(self, cache: MultiLevelCache, db: InsuranceDB, *, ttl: float | None = None):
        self.cache = cache
        self.db = db
        self.ttl = None if ttl is None else validate_ttl(ttl)
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
        (e.g. the customer's policy list after a policy changed hands).
        """
        self.cache.key(key)  # a bad key fails before the database is touched
        ttl = self.ttl if ttl is None else validate_ttl(ttl)
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

    async def update_policy(
        self,
        policy_id: str | int,
        *,
        ttl: float | None = None,
        tags: Iterable[str] = (),
        drop_tags: Iterable[str] = (),
        **changes: Any,
    ) -> Row:
        """`InsuranceDB.update_policy`, then cache the row it returns under `policy:<id>`."""
        return await self.write(
            f"policy:{policy_id}",
            lambda: self.db.update_policy(policy_id, **changes),
            ttl=ttl,
            tags=tags,
            drop_tags=drop_tags,
        )

    async def update_customer(
        self,
        customer_id: str | int,
        *,
        ttl: float | None = None,
        tags: Iterable[str] = (),
        drop_tags: Iterable[str] = (),
        **changes: Any,
    ) -> Row:
        """`InsuranceDB.update_customer`, then cache the row it returns under `customer:<id>`."""
        return await self.write(
            f"customer:{customer_id}",
            lambda: self.db.update_customer(customer_id, **changes),
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


@dataclass(frozen=True)
class Lag:
    """Writes in the cache but not yet in the database: the data-loss window, right now."""

    pending: int  # read by a flusher, not yet acknowledged
    undelivered: int  # not yet read by any flusher
    oldest_age: float  # seconds since the oldest of them was queued (0.0 when none)

    @property
    def total(self) -> int:
        return self.pending + self.undelivered


@dataclass
class FlushStats:
    """Counts of one writer/flusher, since it was made."""

    queued: int = 0  # writes put in the stream by this object
    batches: int = 0  # database transactions
    applied: int = 0  # entries that changed the database
    stale: int = 0  # skipped: the row already had a newer version (replays, reordering)
    dead: int = 0  # invalid entries, moved to the dead-letter stream
    reclaimed: int = 0  # entries taken over from a flusher that stopped acknowledging
    failures: int = 0  # batches that failed (database or Redis down) and will be retried


class Flusher:
    """Applies a write-behind stream to the database in batches; acks only after the commit.

    A batch is flushed when it holds `batch_size` entries or `interval` seconds after its first
    entry arrived. Before new entries, a flusher re-reads its own unacknowledged ones (after a
    restart or a failure) and claims those idle for `min_idle` seconds in other consumers (a
    flusher that crashed): nothing read is ever dropped. Applied entries are acknowledged and
    deleted in one MULTI, so the stream holds exactly the writes not yet in the database.
    """

    def __init__(
        self,
        redis: aioredis.Redis,
        db: InsuranceDB,
        stream: str,
        *,
        group: str = "flushers",
        consumer: str | None = None,
        batch_size: int = 100,
        interval: float = 0.5,
        min_idle: float = 30.0,
    ) -> None:
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, not {batch_size!r}")
        if isinstance(min_idle, bool) or not isinstance(min_idle, (int, float)) or min_idle < 0:
            raise ValueError(f"min_idle must be a number of seconds >= 0, not {min_idle!r}")
        self.redis = redis
        self.db = db
        self.stream = stream
        self.group = group
        self.consumer = consumer or f"flusher-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.dead_letters = f"{stream}:dead"
        self.batch_size = batch_size
        self.interval = validate_ttl(interval, "interval")
        self.min_idle = float(min_idle)
        self.stats = FlushStats()
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._drain_on_stop = True
        self._own_first = True  # re-read what was delivered to us but never acknowledged
        self._claim_cursor = "0-0"
        self._group_ready = False

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def start(self) -> Flusher:
        """Flush in a background task until `stop()`."""
        if not self.running:
            await self.ensure_group()
            self._stopping.clear()
            self._own_first = True
            self._task = asyncio.create_task(self._run(), name=f"flusher:{self.stream}")
        return self

    async def stop(self, *, drain: bool = True, timeout: float = 30.0) -> None:
        """Stop the background task; first (by default) apply everything queued.

        A batch already read always finishes. If draining fails or takes longer than `timeout`,
        the task is cancelled and the rest stays safely in the stream for the next flusher.
        """
        task, self._task = self._task, None
        if task is not None:
            self._drain_on_stop = drain
            self._stopping.set()
            try:
                await asyncio.wait_for(asyncio.shield(task), timeout)
            except asyncio.TimeoutError:
                logger.warning("%s: not drained after %g s; the rest stays queued", self, timeout)
            except Exception as exc:
                logger.warning("%s stopped on %r; the rest stays queued", self, exc)
            finally:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        await self._leave_group()

    async def ensure_group(self) -> None:
        """Create the stream and its consumer group (from id 0: no queued write is skipped)."""
        try:
            await self.redis.xgroup_create(self.stream, self.group, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self._group_ready = True

    def __repr__(self) -> str:
        return f"Flusher({self.stream!r}, group={self.group!r}, consumer={self.consumer!r})"

    # -- flushing ----------------------------------------------------------------------------

    async def flush_once(self) -> int:
        """Read one batch without waiting, apply it, ack it; return how many entries it had."""
        if not self._group_ready:
            await self.ensure_group()
        batch = await self._recover() or await self._read(self.batch_size, None)
        if batch:
            await self._apply(batch)
        return len(batch)

    async def flush(self, timeout: float | None = 30.0) -> int:
        """Return once every write queued so far is in the database; how many this call applied.

        With the background task running, it waits for that task; writes held by another
        flusher are waited for, or claimed once idle for `min_idle` seconds.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        handled = 0
        while True:
            done = 0 if self.running else await self.flush_once()
            handled += done
            if done:
                continue
            lag = await self.lag()
            if lag.total == 0:
                return handled
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"{lag.total} writes still not in the database after {timeout}s")
            await asyncio.sleep(min(0.01, self.interval))  # another flusher holds the rest

    async def lag(self) -> Lag:
        """What is queued but not yet in the database, and how old the oldest such write is."""
        if not self._group_ready:
            await self.ensure_group()
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.xlen(self.stream)
            pipe.xpending(self.stream, self.group)
            pipe.xrange(self.stream, count=1)
            pipe.time()
            length, pending, first, (seconds, micros) = await pipe.execute()
        count = int(pending["pending"])
        oldest = 0.0
        if first:
            queued_ms = int(_text(first[0][0]).split("-")[0])
            oldest = max(0.0, seconds + micros / 1e6 - queued_ms / 1000)
        return Lag(pending=count, undelivered=max(0, int(length) - count), oldest_age=oldest)

    async def _run(self) -> None:
        backoff = 0.0
        while not self._stopping.is_set():
            try:
                batch = await self._until_stopped(self._gather())
                if batch is None:  # stopping: what was read is re-read by the drain
                    self._own_first = True
                    break
                if batch:
                    await self._apply(batch)  # never interrupted by stop(): it finishes
                backoff = 0.0
            except Exception as exc:  # Redis or the database is down: the entries stay queued
                backoff = min(max(backoff * 2, 0.05), 2.0)
                self._failed(exc, backoff)
                await self._until_stopped(asyncio.sleep(backoff))
        if self._drain_on_stop:
            while await self.flush_once():
                pass

    async def _until_stopped(self, work: Awaitable[T]) -> T | None:
        """`work`'s result, or None (and `work` cancelled) if stop() is called first."""
        job = asyncio.ensure_future(work)
        stop = asyncio.ensure_future(self._stopping.wait())
        try:
            await asyncio.wait({job, stop}, return_when=asyncio.FIRST_COMPLETED)
        except BaseException:
            job.cancel()
            raise
        finally:
            stop.cancel()
        if job.done():
            return job.result()
        job.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await job
        return None

    async def _gather(self) -> list[Entry]:
        """Recovered entries at once; else wait up to `interval` for one, then fill the batch."""
        if not self._group_ready:
            await self.ensure_group()
        batch = await self._recover()
        if batch:
            return batch
        batch = await self._read(self.batch_size, self.interval)
        deadline = time.monotonic() + self.interval
        while batch and len(batch) < self.batch_size:
            left = deadline - time.monotonic()
            more = await self._read(self.batch_size - len(batch), left) if left > 0 else []
            if not more:
                break
            batch += more
        return batch

    async def _recover(self) -> list[Entry]:
        """Our own unacknowledged entries first; then entries idle in a consumer that died."""
        if self._own_first:
            own = await self._read(self.batch_size, None, own=True)
            if own:
                return own
            self._own_first = False
        reply = await self.redis.xautoclaim(
            self.stream,
            self.group,
            self.consumer,
            round(self.min_idle * 1000),
            self._claim_cursor,
            count=self.batch_size,
        )
        self._claim_cursor = _text(reply[0])
        claimed: list[Entry] = list(reply[1])
        if claimed:
            self.stats.reclaimed += len(claimed)
            logger.info(
                "%s claimed %d writes idle for over %g s", self, len(claimed), self.min_idle
            )
        return claimed

    async def _read(self, count: int, block: float | None, *, own: bool = False) -> list[Entry]:
        block_ms = None if block is None else max(1, round(block * 1000))
        reply: Any = await self.redis.xreadgroup(
            self.group,
            self.consumer,
            {self.stream: "0" if own else ">"},
            count=count,
            block=block_ms,
        )
        if not reply:
            return []
        if isinstance(reply, dict):  # RESP3: {stream: [entries]}
            (entries,) = reply.values()
            return list(entries[0] if entries and isinstance(entries[0], list) else entries)
        return list(reply[0][1])  # RESP2: [[stream, entries]]

    async def _apply(self, batch: list[Entry]) -> None:
        try:
            await self._commit_then_ack(batch)
        except BaseException:
            self._own_first = True  # the batch is still ours and unacked: re-read it first
            raise

    async def _commit_then_ack(self, batch: list[Entry]) -> None:
        """Commit the batch to the database, then ack + delete it (and dead-letter bad entries)."""
        ids = [entry_id for entry_id, _ in batch]
        parsed: list[tuple[bytes, dict[str, str], tuple[str, str, dict[str, Any], int]]] = []
        dead: list[tuple[bytes, dict[str, str], str]] = []
        for entry_id, raw in batch:
            if not raw:
                continue  # deleted from the stream under us: nothing to apply, only to ack
            fields = {_text(k): _text(v) for k, v in raw.items()}
            try:
                write = (fields["table"], fields["id"], json.loads(fields["fields"]))
                parsed.append((entry_id, fields, (*write, int(fields["version"]))))
            except (KeyError, ValueError) as exc:
                dead.append((entry_id, fields, f"invalid: malformed entry ({exc!r})"))
        outcomes = await self.db.apply_writes([w for _, _, w in parsed]) if parsed else []
        self.stats.batches += 1
        for (entry_id, fields, _), outcome in zip(parsed, outcomes, strict=True):
            if outcome == "applied":
                self.stats.applied += 1
            elif outcome == "stale":
                self.stats.stale += 1
            else:
                dead.append((entry_id, fields, outcome))
        async with self.redis.pipeline(transaction=True) as pipe:
            for entry_id, fields, why in dead:
                logger.error("%s: write %s dead-lettered: %s", self, _text(entry_id), why)
                letter: Any = {**fields, "entry": entry_id, "error": why}
                pipe.xadd(self.dead_letters, letter)
            pipe.xack(self.stream, self.group, *ids)
            pipe.xdel(self.stream, *ids)
            await pipe.execute()
        self.stats.dead += len(dead)

    def _failed(self, exc: BaseException, backoff: float) -> None:
        self.stats.failures += 1
        self._own_first = True
        if isinstance(exc, ResponseError) and "NOGROUP" in str(exc):
            self._group_ready = False  # the stream was deleted: recreate the group
        logger.warning("%s: batch failed (%r); retrying in %.2f s", self, exc, backoff)

    async def _leave_group(self) -> None:
        """Remove this consumer from the group if it holds nothing (consumers pile up otherwise)."""
        with contextlib.suppress(*REDIS_FAILURES):
            mine = await self.redis.xpending_range(
                self.stream, self.group, min="-", max="+", count=1, consumername=self.consumer
            )
            if not mine:
                await self.redis.xgroup_delconsumer(self.stream, self.group, self.consumer)


class WriteBehind:
    """The cache now, the database later: writes queue in a Redis Stream, a flusher applies them.

    The danger is the window `lag()` measures: until a write is flushed it exists only in
    Redis. Run that Redis with AOF (`appendonly yes`) and keep cache TTLs far longer than the
    lag, with no evicting `maxmemory-policy`: a key that expires before its write is flushed
    is reloaded from the database, which still has the old value.
    """

    def __init__(
        self,
        cache: MultiLevelCache,
        db: InsuranceDB,
        *,
        stream: str = "__writes__",
        group: str = "flushers",
        consumer: str | None = None,
        batch_size: int = 100,
        interval: float = 0.5,
        min_idle: float = 30.0,
        ttl: float | None = None,
    ) -> None:
        self.cache = cache
        self.db = db
        self.ttl = None if ttl is None else validate_ttl(ttl)
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
        ttl = validate_ttl(
            next(t for t in (ttl, self.ttl, self.cache.default_ttl) if t is not None)
        )
        expires_at = self.cache.clock() + ttl  # read first: L1 must not outlive the Redis entry
        full, record, px = self.cache.encode_entry(key, value, ttl)
        payload = json.dumps(dict(fields), sort_keys=True, separators=(",", ":"))
        tag_keys = [self.cache.tag_key(t) for t in tags]
        _, version = await self._script(
            keys=[full, self.stream, self.version_key, *tag_keys],
            args=[record, px, key, table, str(row_id), payload],
        )
        self.stats.queued += 1
        self.cache.fill_l1(key, value, expires_at=expires_at, size=len(record))
        await _announce(self.cache, full)
        return int(version)

    async def update_policy(
        self, policy_id: str | int, *, ttl: float | None = None, **changes: Any
    ) -> Row:
        """Apply `changes` to the cached policy now; the database gets them at the next flush."""
        return await self._update("policies", "policy", policy_id, self.db.get_policy, ttl, changes)

    async def update_customer(
        self, customer_id: str | int, *, ttl: float | None = None, **changes: Any
    ) -> Row:
        """Apply `changes` to the cached customer now; the database gets them at the next flush."""
        return await self._update(
            "customers", "customer", customer_id, self.db.get_customer, ttl, changes
        )

    async def _update(
        self,
        table: str,
        kind: str,
        row_id: str | int,
        load: Callable[[str | int], Awaitable[Row | None]],
        ttl: float | None,
        changes: Mapping[str, Any],
    ) -> Row:
        self.db.validate_changes(table, changes, check_references=False)
        key = f"{kind}:{row_id}"
        async with self._locks(key):  # read-modify-write: one update of a key at a time here
            current = await self.cache.get(
                key, lambda: load(row_id), ttl=self.ttl if ttl is None else ttl
            )
            if current is None:
                raise KeyError(f"no {kind} with id {row_id!r}")
            new = _merged(current, changes)
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


# -- a flusher as its own process: `python -m labcache.writes flush --url ... --db ...` --------


async def run_flusher(
    url: str,
    database: str,
    *,
    namespace: str = "lab10:",
    stream: str = "__writes__",
    group: str = "flushers",
    consumer: str | None = None,
    batch_size: int = 100,
    interval: float = 0.5,
    min_idle: float = 30.0,
    latency_scale: float = 1.0,
    until_empty: bool = False,
) -> FlushStats:
    """Flush until SIGINT/SIGTERM (then drain), or with `until_empty` until the stream is empty."""
    redis = aioredis.from_url(url)
    db = InsuranceDB(database=database, latency_scale=latency_scale)
    flusher = Flusher(
        redis,
        db,
        namespace + stream,
        group=group,
        consumer=consumer,
        batch_size=batch_size,
        interval=interval,
        min_idle=min_idle,
    )
    try:
        if until_empty:
            await flusher.flush(timeout=None)
        else:
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, stop.set)
            await flusher.start()
            await stop.wait()
    finally:
        await flusher.stop()
        await redis.aclose()
        db.close()
    return flusher.stats


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m labcache.writes")
    commands = parser.add_subparsers(dest="command", required=True)
    flush = commands.add_parser("flush", help="apply a write-behind stream to an InsuranceDB file")
    flush.add_argument("--url", default=os.environ.get("REDIS_URL"), help="default: $REDIS_URL")
    flush.add_argument("--db", required=True, help="the SQLite file of the InsuranceDB")
    flush.add_argument("--namespace", default="lab10:")
    flush.add_argument("--stream", default="__writes__")
    flush.add_argument("--group", default="flushers")
    flush.add_argument("--consumer", default=None)
    flush.add_argument("--batch-size", type=int, default=100)
    flush.add_argument("--interval", type=float, default=0.5, help="seconds")
    flush.add_argument("--min-idle", type=float, default=30.0, help="seconds before claiming")
    flush.add_argument("--latency-scale", type=float, default=1.0)
    flush.add_argument("--until-empty", action="store_true", help="exit once the stream is empty")
    args = parser.parse_args(argv)
    if not args.url:
        parser.error("no Redis: pass --url or set REDIS_URL")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    stats = asyncio.run(
        run_flusher(
            args.url,
            args.db,
            namespace=args.namespace,
            stream=args.stream,
            group=args.group,
            consumer=args.consumer,
            batch_size=args.batch_size,
            interval=args.interval,
            min_idle=args.min_idle,
            latency_scale=args.latency_scale,
            until_empty=args.until_empty,
        )
    )
    print(json.dumps(asdict(stats)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
