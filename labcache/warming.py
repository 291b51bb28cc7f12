"""Part 3: warming a cache before traffic arrives, in pipelined batches with bounded concurrency.

The lab warmed a cache by calling `get` for every key at once: each key cost its own round
trips, and nothing limited how many loader calls hit the database together. Here:
- at most `concurrency` loader calls run at a time (an asyncio.Semaphore), so warming cannot
  flatten the source it is meant to protect;
- each batch costs one pipelined round trip to check which keys exist, one to write them all
  (SET ... PX, the same record `MultiLevelCache.set` writes) and one PUBLISH so other instances
  drop older L1 copies, instead of several round trips per key;
- keys already in Redis are skipped unless `force=True` (checked before loading, and again by
  `SET ... NX` when writing, so a value written meanwhile by someone else is never overwritten);
- a loader that fails is recorded in `WarmResult.failed`, and the other keys carry on.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from labcache.aside import REDIS_FAILURES
from labcache.events import L2, LOAD, SET, SOURCE, CacheEvent
from labcache.multilevel import MultiLevelCache
from labcache.optional import progress_bar
from labcache.serializers import SerializationError
from labcache.validate import positive_seconds, whole

logger = logging.getLogger(__name__)

Loader = Callable[[], Awaitable[Any]]
LoaderFor = Callable[[str], Awaitable[Any]]


@dataclass(frozen=True)
class WarmPlan:
    """How one data type is warmed: its key prefix and its TTLs in Redis and in memory.

    The lab's plans (policies, customers, agent statistics) are `labcache.lab.plans`.
    """

    kind: str
    prefix: str
    ttl: float
    memory_ttl: float

    def key(self, ident: str | int) -> str:
        return f"{self.prefix}{ident}"


def top_keys(access_log: Iterable[str], n: int) -> list[str]:
    """The `n` most requested keys of a log, most requested first (ties: first seen first)."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"n must be a whole number >= 0, not {n!r}")
    if isinstance(access_log, str):
        raise TypeError("access_log must be an iterable of keys, not one string")
    return [key for key, _ in Counter(access_log).most_common(n)]


@dataclass
class WarmResult:
    """What one warm did: keys written, keys already cached, keys that failed (and why)."""

    warmed: int = 0
    skipped: int = 0
    failed: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    round_trips: int = 0

    @property
    def total(self) -> int:
        return self.warmed + self.skipped + len(self.failed)

    def __str__(self) -> str:
        return (
            f"warmed {self.warmed}, skipped {self.skipped}, failed {len(self.failed)} "
            f"in {self.seconds:.3f} s ({self.round_trips} round trips to Redis)"
        )


@dataclass
class _Write:
    key: str
    full: str
    data: bytes
    px: int
    value: Any
    expires_at: float


class CacheWarmer:
    """Loads many keys into a MultiLevelCache: bounded loader concurrency, pipelined writes."""

    def __init__(
        self,
        cache: MultiLevelCache,
        *,
        concurrency: int = 16,
        batch_size: int = 500,
        progress: bool = True,
    ) -> None:
        self.cache = cache
        self.concurrency = whole(concurrency, "concurrency")
        self.batch_size = whole(batch_size, "batch_size")
        self.progress = progress
        self.round_trips = 0  # every pipeline execute and PUBLISH this warmer sent, ever

    async def warm(
        self,
        items: Mapping[str, Loader] | Iterable[str],
        loader_for: LoaderFor | None = None,
        *,
        ttl: float | None = None,
        memory_ttl: float | None = None,
        force: bool = False,
        fill_memory: bool = True,
        desc: str = "warming",
    ) -> WarmResult:
        """Load and store every key: `{key: loader}`, or keys plus `loader_for(key)`."""
        jobs = self._jobs(items, loader_for)
        ttl = self.cache.default_ttl if ttl is None else positive_seconds(ttl)
        memory_ttl = (
            self.cache.memory_ttl
            if memory_ttl is None
            else positive_seconds(memory_ttl, "memory_ttl")
        )
        result = WarmResult()
        started = time.perf_counter()
        semaphore = asyncio.Semaphore(self.concurrency)
        with progress_bar(len(jobs), desc, enabled=self.progress) as bar:
            for i in range(0, len(jobs), self.batch_size):
                batch = jobs[i : i + self.batch_size]
                await self._warm_batch(
                    batch, ttl, memory_ttl, force, fill_memory, semaphore, result, bar
                )
        result.seconds = time.perf_counter() - started
        logger.info("%s: %s", desc, result)
        return result

    async def warm_top(
        self,
        access_log: Iterable[str],
        n: int,
        loader_for: LoaderFor,
        *,
        ttl: float | None = None,
        memory_ttl: float | None = None,
        force: bool = False,
    ) -> WarmResult:
        """Warm the `n` keys the access log asked for most."""
        keys = top_keys(access_log, n)
        return await self.warm(
            keys, loader_for, ttl=ttl, memory_ttl=memory_ttl, force=force, desc=f"top {n}"
        )

    async def warm_plan(
        self,
        plan: WarmPlan,
        ids: Iterable[str | int],
        load_one: Callable[[str], Awaitable[Any]],
        *,
        force: bool = False,
    ) -> WarmResult:
        """Warm one data type by id, e.g. `warm_plan(plans["policy"], ids, db.get_policy)`."""
        jobs = {plan.key(i): functools.partial(load_one, str(i)) for i in ids}
        return await self.warm(
            jobs, ttl=plan.ttl, memory_ttl=plan.memory_ttl, force=force, desc=plan.kind
        )

    # -- internals ---------------------------------------------------------------------------

    def _jobs(
        self, items: Mapping[str, Loader] | Iterable[str], loader_for: LoaderFor | None
    ) -> list[tuple[str, Loader]]:
        if isinstance(items, Mapping):
            if loader_for is not None:
                raise TypeError("pass {key: loader} or keys with loader_for, not both")
            jobs = list(items.items())
        else:
            if isinstance(items, str):
                raise TypeError("pass an iterable of keys, not one string")
            if loader_for is None:
                raise TypeError("keys need loader_for: a function that loads one key")
            jobs = [(k, functools.partial(loader_for, k)) for k in dict.fromkeys(items)]
        for key, loader in jobs:
            self.cache.key(key)  # a bad key fails here, before anything is loaded or written
            if not callable(loader):
                raise TypeError(f"the loader for {key!r} is not callable: {loader!r}")
        return jobs

    async def _warm_batch(
        self,
        batch: list[tuple[str, Loader]],
        ttl: float,
        memory_ttl: float,
        force: bool,
        fill_memory: bool,
        semaphore: asyncio.Semaphore,
        result: WarmResult,
        bar: Any,
    ) -> None:
        todo = batch
        if not force:
            try:
                found = await self._pipeline(
                    result, [("EXISTS", self.cache.key(k)) for k, _ in batch]
                )
            except REDIS_FAILURES as exc:
                self._redis_failed([k for k, _ in batch], exc, result)
                bar.update(len(batch))
                return
            todo = [job for job, hit in zip(batch, found, strict=True) if not hit]
            result.skipped += len(batch) - len(todo)
            bar.update(len(batch) - len(todo))
        loaded = await asyncio.gather(
            *(self._load(key, loader, semaphore, result, bar) for key, loader in todo)
        )
        writes = [
            w
            for (key, _), outcome in zip(todo, loaded, strict=True)
            if outcome is not None and (w := self._encode(key, *outcome, ttl, result)) is not None
        ]
        if writes:
            await self._store(writes, memory_ttl, fill_memory, force, result)

    async def _load(
        self, key: str, loader: Loader, semaphore: asyncio.Semaphore, result: WarmResult, bar: Any
    ) -> tuple[Any, float] | None:
        """`(value, seconds)`, or None after recording why the loader failed."""
        async with semaphore:
            start = time.perf_counter()
            try:
                value = await loader()
            except Exception as exc:  # one bad key must not stop the others
                result.failed[key] = f"{type(exc).__name__}: {exc}"
                logger.warning("warming %r failed: %s", key, result.failed[key])
                return None
            finally:
                elapsed = time.perf_counter() - start
                self.cache.stats.loads += 1
                self.cache.stats.load_time += elapsed
                bar.update(1)
        if self.cache.events:
            self.cache.events.emit(CacheEvent(LOAD, key, SOURCE, elapsed, time.perf_counter()))
        return value, elapsed

    def _encode(
        self, key: str, value: Any, load_time: float, ttl: float, result: WarmResult
    ) -> _Write | None:
        if value is None and self.cache.negative_ttl is None:
            result.failed[key] = "the loader returned None (not cached without negative_ttl)"
            return None
        store_ttl = ttl if value is not None else self.cache.negative_ttl
        assert store_ttl is not None
        written_at = self.cache.clock()  # the record's expiry is never earlier than this + ttl
        try:
            full, data, px = self.cache.encode_entry(key, value, store_ttl, load_time)
        except SerializationError as exc:
            result.failed[key] = str(exc)
            return None
        return _Write(key, full, data, px, value, written_at + store_ttl)

    async def _store(
        self,
        writes: list[_Write],
        memory_ttl: float,
        fill_memory: bool,
        force: bool,
        result: WarmResult,
    ) -> None:
        # NX unless forced: a value someone else wrote since the EXISTS check is newer than ours.
        only_new = () if force else ("NX",)
        commands = [("SET", w.full, w.data, "PX", w.px, *only_new) for w in writes]
        try:
            replies = await self._pipeline(result, commands)
        except REDIS_FAILURES as exc:
            self._redis_failed([w.key for w in writes], exc, result)
            return
        stored: list[str] = []
        for w, reply in zip(writes, replies, strict=True):
            if isinstance(reply, Exception):
                result.failed[w.key] = f"Redis refused the SET: {reply}"
                continue
            if reply is None:  # NX: written by someone else meanwhile
                result.skipped += 1
                continue
            stored.append(w.full)
            if fill_memory:
                self.cache.fill_l1(
                    w.key, w.value, expires_at=w.expires_at, memory_ttl=memory_ttl, size=len(w.data)
                )
            if self.cache.events:
                self.cache.events.emit(
                    CacheEvent(SET, w.full, L2, 0.0, time.perf_counter(), "warm")
                )
        result.warmed += len(stored)
        self.cache.stats.sets += len(stored)
        if stored and self.cache.backplane is not None:
            try:  # other instances may hold older copies of these keys in their L1
                await self.cache.backplane.publish("keys", stored)
            except REDIS_FAILURES as exc:
                logger.warning("warming could not tell other instances: %s", exc)
                self.cache.stats.errors += 1
            finally:
                self._count_round_trip(result)

    async def _pipeline(self, result: WarmResult, commands: list[tuple[Any, ...]]) -> list[Any]:
        """Send every command in one round trip (no MULTI: a batch need not be atomic)."""
        async with self.cache.redis.pipeline(transaction=False) as pipe:
            for command in commands:
                pipe.execute_command(*command)
            try:
                return list(await pipe.execute(raise_on_error=False))
            finally:
                self._count_round_trip(result)

    def _count_round_trip(self, result: WarmResult) -> None:
        self.round_trips += 1
        result.round_trips += 1

    def _redis_failed(self, keys: list[str], exc: BaseException, result: WarmResult) -> None:
        logger.warning(
            "warming: Redis failed for %d keys: %s: %s", len(keys), type(exc).__name__, exc
        )
        self.cache.stats.errors += 1
        if self.cache.strict:
            raise exc
        reason = f"Redis failed: {type(exc).__name__}: {exc}"
        for key in keys:
            result.failed[key] = reason
