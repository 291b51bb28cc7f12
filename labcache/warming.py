"""Part 3: warming a cache before traffic arrives, in pipelined batches with bounded concurrency.

The lab warmed a cache by calling `get` for every key at once: each key cost its own round
trips, and nothing limited how many loader calls hit the database together. Here:
- at most `concurrency` loader calls run at a time (that many workers share the keys), so
  warming cannot flatten the source it is meant to protect;
- each batch costs one round trip to check which keys exist, one to write them all (one script
  call: the same records, jitter and size limit as `MultiLevelCache.set`, through the cache's
  `RedisStore` and its guard) and one PUBLISH so other instances drop older L1 copies, instead
  of several round trips per key;
- keys already in Redis are skipped unless `force=True` (checked before loading, and again by
  `SET ... NX` when writing, so a value written meanwhile by someone else is never overwritten);
- a loader that fails is recorded in `WarmResult.failed`, and the other keys carry on;
- L1 is filled only while it has room (warming never evicts): the first keys given, which for
  `warm_top` are the most requested.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from labcache.aside import REDIS_FAILURES, ValueTooLarge
from labcache.multilevel import MultiLevelCache
from labcache.optional import progress_bar
from labcache.serializers import SerializationError
from labcache.stats import Counters
from labcache.store import BATCH, Record
from labcache.tasks import cancel_and_wait
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
    whole(n, "n", minimum=0)
    if isinstance(access_log, str):
        raise TypeError("access_log must be an iterable of keys, not one string")
    return [key for key, _ in Counter(access_log).most_common(n)]


@dataclass
class WarmResult(Counters):
    """What one warm did: keys written, keys already cached, keys that failed (and why)."""

    DERIVED: ClassVar[tuple[str, ...]] = ("total",)

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
class _Job:
    key: str
    full: str
    loader: Loader


@dataclass
class _Write:
    key: str
    value: Any
    record: Record


class CacheWarmer:
    """Loads many keys into a MultiLevelCache: bounded loader concurrency, pipelined writes."""

    def __init__(
        self,
        cache: MultiLevelCache,
        *,
        concurrency: int = 16,
        batch_size: int = 1000,
        progress: bool = True,
    ) -> None:
        self.cache = cache
        self.concurrency = whole(concurrency, "concurrency")
        self.batch_size = whole(batch_size, "batch_size")
        self.progress = progress
        self.round_trips = 0  # every script call and PUBLISH this warmer sent, ever

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
            self.cache.l1.ttl if memory_ttl is None else positive_seconds(memory_ttl, "memory_ttl")
        )
        result = WarmResult()
        started = time.perf_counter()
        # Batch i's write runs while batch i+1 loads: Redis works while the loaders do. (Sending
        # batch i+1's EXISTS early as well was slower: measured 243 against 186 ms a warm.)
        batches = [jobs[i : i + self.batch_size] for i in range(0, len(jobs), self.batch_size)]
        writing: asyncio.Task[None] | None = None
        try:
            with progress_bar(len(jobs), desc, enabled=self.progress) as bar:
                for batch in batches:
                    todo = await self._todo(batch, force, result, bar)
                    writes = await self._load_batch(todo, ttl, result, bar)
                    if writing is not None:
                        await writing
                    store = self._store(writes, memory_ttl, fill_memory, force, result)
                    writing = asyncio.create_task(store)
                if writing is not None:
                    await writing
        finally:
            await cancel_and_wait([writing])
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
    ) -> list[_Job]:
        if isinstance(items, Mapping):
            if loader_for is not None:
                raise TypeError("pass {key: loader} or keys with loader_for, not both")
            pairs = list(items.items())
        else:
            if isinstance(items, str):
                raise TypeError("pass an iterable of keys, not one string")
            if loader_for is None:
                raise TypeError("keys need loader_for: a function that loads one key")
            pairs = [(k, functools.partial(loader_for, k)) for k in dict.fromkeys(items)]
        jobs = []
        for key, loader in pairs:
            full = self.cache.key(key)  # a bad key fails here, before anything is loaded
            if not callable(loader):
                raise TypeError(f"the loader for {key!r} is not callable: {loader!r}")
            jobs.append(_Job(key, full, loader))
        return jobs

    async def _todo(
        self, batch: list[_Job], force: bool, result: WarmResult, bar: Any
    ) -> list[_Job]:
        """The jobs of a batch whose keys are not in Redis yet (all of them with `force`)."""
        if force:
            return batch
        try:
            missing = await self.cache.store.missing([job.full for job in batch])
        except REDIS_FAILURES as exc:
            self._redis_failed([job.key for job in batch], exc, result)
            bar.update(len(batch))
            return []
        finally:
            self._count_round_trips(result, len(batch))
        todo = [job for job, absent in zip(batch, missing, strict=True) if absent]
        result.skipped += len(batch) - len(todo)
        bar.update(len(batch) - len(todo))
        return todo

    async def _load_batch(
        self, todo: list[_Job], ttl: float, result: WarmResult, bar: Any
    ) -> list[_Write]:
        """Load and encode these jobs, `concurrency` loader calls at a time."""
        writes: list[_Write] = []
        jobs = iter(todo)
        call_loader = self.cache.loads.call_loader

        async def worker() -> None:  # `concurrency` of these: that many loader calls at a time
            for job in jobs:
                start = time.perf_counter()
                try:
                    value = await call_loader(job.key, job.loader)
                except Exception as exc:  # one bad key must not stop the others
                    result.failed[job.key] = f"{type(exc).__name__}: {exc}"
                    logger.warning("warming %r failed: %s", job.key, result.failed[job.key])
                    continue
                finally:
                    bar.update(1)
                load_time = time.perf_counter() - start
                if w := self._encode(job, value, load_time, ttl, result):
                    writes.append(w)

        await asyncio.gather(*(worker() for _ in range(min(self.concurrency, len(todo)))))
        return writes

    def _encode(
        self, job: _Job, value: Any, load_time: float, ttl: float, result: WarmResult
    ) -> _Write | None:
        if value is None and self.cache.negative_ttl is None:
            result.failed[job.key] = "the loader returned None (not cached without negative_ttl)"
            return None
        store_ttl = ttl if value is not None else self.cache.negative_ttl
        assert store_ttl is not None
        try:
            record = self.cache.store.record(job.full, value, store_ttl, load_time=load_time)
        except (SerializationError, ValueTooLarge) as exc:
            result.failed[job.key] = str(exc)
            return None
        return _Write(job.key, value, record)

    async def _store(
        self,
        writes: list[_Write],
        memory_ttl: float,
        fill_memory: bool,
        force: bool,
        result: WarmResult,
    ) -> None:
        if not writes:
            return
        # NX unless forced: a value someone else wrote since the EXISTS check is newer than ours.
        records = [w.record for w in writes]
        try:
            done = await self.cache.store.write_many(records, only_new=not force, detail="warm")
        except REDIS_FAILURES as exc:
            self._redis_failed([w.key for w in writes], exc, result)
            return
        finally:
            self._count_round_trips(result, len(records))
        stored = [w for w, ok in zip(writes, done, strict=True) if ok]
        result.skipped += len(writes) - len(stored)  # NX: written by someone else meanwhile
        result.warmed += len(stored)
        l1 = self.cache.l1
        for w in stored if fill_memory else ():
            if l1.currsize >= l1.maxsize:  # full: warming never evicts what is already there
                break
            self.cache.fill_l1(w.key, w.value, expires_at=w.record.expires_at,
                               memory_ttl=memory_ttl, size=len(w.record.data))  # fmt: skip
        if stored and self.cache.backplane is not None:
            # other instances may hold older copies of these keys in their L1
            await self.cache.announce([w.record.full for w in stored])
            self._count_round_trips(result, 1)

    def _count_round_trips(self, result: WarmResult, keys: int) -> None:
        calls = max(1, -(-keys // BATCH))  # one script call per BATCH keys
        self.round_trips += calls
        result.round_trips += calls

    def _redis_failed(self, keys: list[str], exc: BaseException, result: WarmResult) -> None:
        logger.warning(
            "warming: Redis failed for %d keys: %s: %s", len(keys), type(exc).__name__, exc
        )
        self.cache.loads.redis_error(f"warm: {len(keys)} keys", exc)  # raises in strict mode
        reason = f"Redis failed: {type(exc).__name__}: {exc}"
        for key in keys:
            result.failed[key] = reason
