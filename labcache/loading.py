"""What a multi-level cache does when Redis has no fresh value: load it, once.

`Loads` owns a cache's loads: single-flight misses, XFetch background refreshes, stale serving
within grace, the fleet lock, and the fallback when Redis fails. It writes what it loaded
through the cache's `RedisStore` and keeps a copy in its `Memory`. The policies it follows are
the read's `Stampede` and `Staleness` (labcache.policies).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from labcache.aside import REDIS_FAILURES, ValueTooLarge
from labcache.breaker import CircuitOpen
from labcache.errors import LoadTimeout
from labcache.events import (
    EARLY_REFRESH,
    ERROR,
    FALLBACK,
    HIT,
    L1,
    L2,
    LOAD,
    LOCK_WAIT,
    MISS,
    SOURCE,
    STALE,
    EventHub,
)
from labcache.memory import Memory
from labcache.optional import pandas
from labcache.policies import Guard, Staleness, Stampede
from labcache.stampede import MISSING, SingleFlight, StampedeStats, load_with_lock, wait_or_stale
from labcache.stats import Counters
from labcache.store import Found, RedisStore
from labcache.ttl import l1_ttl

if TYPE_CHECKING:  # pandas is the course extra's: imported only where a table is asked for
    import pandas as pd

logger = logging.getLogger(__name__)
Loader = Callable[[], Awaitable[Any]]


@dataclass
class LevelStats(Counters):
    """Where requests were served from, since the cache was made."""

    DERIVED: ClassVar[tuple[str, ...]] = ("requests", "hit_rate")

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


@dataclass(slots=True)
class Read:
    """One `get` past L1, with its settings validated."""

    key: str
    full: str
    loader: Loader
    ttl: float
    memory_ttl: float
    tags: tuple[str, ...]
    stampede: Stampede
    staleness: Staleness
    start: float
    skip_memory: bool = False


class Loads:
    """A cache's loads and refreshes; every one tracked, and cancelled by `close()`."""

    def __init__(
        self,
        store: RedisStore,
        memory: Memory,
        stats: LevelStats,
        events: EventHub,
        negative_ttl: float | None,
        guard: Guard,
    ) -> None:
        self.store = store
        self.memory = memory  # replaced by MultiLevelCache.resize_l1
        self.stats = stats
        self.events = events
        self.negative_ttl = negative_ttl
        self.strict = guard.strict
        self.clock = store.clock
        self.flight = SingleFlight()  # misses: one load per key in this process
        self.refreshes = SingleFlight()  # background refreshes: one per key
        self.stampede_stats = StampedeStats()

    def __len__(self) -> int:
        return len(self.flight) + len(self.refreshes)

    def waiting(self, full: str) -> int:
        return self.flight.waiting(full) + self.refreshes.waiting(full)

    async def close(self) -> None:
        await self.refreshes.cancel()
        await self.flight.cancel()

    # -- a fresh record: keep a copy, maybe refresh early ---------------------------------------

    def keep(self, read: Read, found: Found, now: float) -> None:
        """Keep an L1 copy of a record read from Redis, bounded by the record (mistake 6)."""
        if not read.skip_memory:
            bound = self.l1_bound(read, now, found.expires_at)
            early = self.early_info(read.stampede, found.expires_at, found.load_time)
            self.memory.put(read.full, found.value, bound, found.size, early)

    def l1_bound(self, read: Read, now: float, expires_at: float) -> float:
        sliding_ttl = read.ttl if read.staleness.sliding else None
        return l1_ttl(read.memory_ttl, now, expires_at, sliding_ttl=sliding_ttl)

    @staticmethod
    def early_info(
        stampede: Stampede, expires_at: float, load_time: float
    ) -> tuple[float, float, Any] | None:
        """What an L1 copy keeps so that L1 hits draw too (None: early refresh is off)."""
        return (
            (expires_at, load_time, stampede) if stampede.early_refresh and load_time > 0 else None
        )

    def draw(self, stampede: Stampede, full: str, expires_at: float, load_time: float) -> bool:
        """XFetch (the paper's rule): does this read's draw start the key's background refresh?"""
        if not stampede.early_refresh or load_time <= 0 or self.refreshes.pending(full) is not None:
            return False
        return self.clock() >= stampede.xfetch.refresh_at(expires_at, load_time)

    def refresh_early(
        self, read: Read, expires_at: float, load_time: float, *, recheck: bool = False
    ) -> None:
        """Start the refresh a draw chose. `recheck`: the draw was made on an L1 hit, so Redis
        may already hold a newer record (another instance refreshed it); look there first.
        """
        self.stampede_stats.early_refreshes += 1
        left = f"{expires_at - self.clock():.3f}s early"
        self.events.report(EARLY_REFRESH, read.key, SOURCE, None, left)
        self._refresh(read, expires_at, load_time, recheck=recheck)

    # -- an expired record within grace --------------------------------------------------------

    async def serve_stale(self, read: Read, found: Found) -> Any:
        """One background refresh; wait up to the soft timeout, else serve the stale value."""
        refresh = self._refresh(read, found.expires_at, found.load_time)
        fresh, new, why = await wait_or_stale(refresh, read.staleness.soft_timeout)
        if fresh:
            self.stats.misses += 1
            self.events.report(MISS, read.key, SOURCE, read.start)
            return new
        self.stampede_stats.soft_timeouts += why == "soft timeout"
        self.stampede_stats.stale_served += 1
        self.stats.l2_hits += 1
        self.events.report(STALE, read.key, L2, read.start, why)
        return found.value

    def _refresh(
        self, read: Read, expires_at: float, load_time: float, *, recheck: bool = False
    ) -> asyncio.Future[Any]:
        """Start (or join) the one background refresh of a key. It replaces the record that
        expires at `expires_at`; with `recheck`, a newer one already in Redis is taken instead.
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
                self.events.report(ERROR, read.key, SOURCE, None, f"refresh: {type(exc).__name__}")
                raise

        return self.refreshes.start(read.full, refresh)

    # -- nothing usable: load once ---------------------------------------------------------------

    async def miss(self, read: Read, last_load: float | None) -> Any:
        """Load once per process (single-flight), or per fleet (the lock); `hard_timeout` bounds
        the wait.
        """
        hard = read.stampede.hard_timeout
        shared = read.stampede.single_flight
        if shared and not read.skip_memory and self.flight.pending(read.full) is None:
            item = self.memory.get(read.full)  # a load ended while our GET was in flight
            if item is not None:
                self.stats.l1_hits += 1
                self.events.report(HIT, read.key, L1, read.start, "filled during our read")
                return item.value

        async def load() -> tuple[Any, bool]:
            return await self._load(read, last_load=last_load)

        try:
            if self.refreshes.pending(read.full) is not None:  # a refresh is loading this key
                value, loaded = await self.refreshes.follow(read.full, timeout=hard), True
                self.stats.coalesced += 1
            elif shared:
                (value, loaded), joined = await self.flight.run(read.full, load, timeout=hard)
                self.stats.coalesced += joined
            else:
                value, loaded = await asyncio.wait_for(load(), hard)
        except asyncio.TimeoutError:
            if hard is None:
                raise
            self.stampede_stats.hard_timeouts += 1
            self.events.report(ERROR, read.key, SOURCE, read.start, f"hard timeout {hard}s")
            raise LoadTimeout(
                f"{read.key!r}: no value within hard_timeout={hard}s and no stale copy to serve"
            ) from None
        if loaded:
            self.stats.misses += 1
            self.events.report(MISS, read.key, SOURCE, read.start)
        else:
            self.stats.l2_hits += 1
            self.events.report(HIT, read.key, L2, read.start, "after lock wait")
        return value

    async def _load(
        self, read: Read, *, newer_than: float | None = None, last_load: float | None = None
    ) -> tuple[Any, bool]:
        """Load and store; with a lock, only if no other process did: `(value, loaded)`."""
        lock = read.stampede.lock
        if lock is None:
            return await self._load_and_store(read), True

        async def load() -> Any:
            return await self._load_and_store(read)

        async def reread() -> Any:
            return await self._reread(read, newer_than)

        def on_wait(how: str, waited: float) -> None:
            self.events.report(LOCK_WAIT, read.key, L2, time.perf_counter() - waited, how)

        return await load_with_lock(
            lock,
            read.key,
            load,
            reread,
            ttl=lock.ttl_for(last_load),
            stats=self.stampede_stats,
            on_wait=on_wait,
        )

    async def _load_and_store(self, read: Read) -> Any:
        began = self.clock()  # the record's load time is on the cache clock: XFetch's delta
        value = await self.call_loader(read.key, read.loader)
        if value is None and self.negative_ttl is None:
            return value
        ttl = read.ttl if value is not None else self.negative_ttl
        assert ttl is not None
        delta = max(0.0, self.clock() - began)
        try:
            record = self.store.record(
                read.full, value, ttl, load_time=delta, grace=read.staleness.grace,
                jitter=read.stampede.jitter,
            )  # fmt: skip
            await self.store.write(record, read.tags)
        except REDIS_FAILURES as exc:  # the value is good; only caching it failed (mistake 7)
            self.redis_error(read.key, exc)
            expires_at, size = self.clock() + ttl, 0
        except ValueTooLarge:  # served, not cached at any level (REJECTED was emitted)
            return value
        else:
            expires_at, size = record.expires_at, len(record.data)
        if not read.skip_memory:
            bound = self.l1_bound(read, self.clock(), expires_at)
            early = self.early_info(read.stampede, expires_at, delta)
            self.memory.put(read.full, value, bound, size, early)
        return value

    async def call_loader(self, key: str, loader: Loader) -> Any:
        """Run a loader, counted and timed; its failure is an ERROR event, then the caller's."""
        start = time.perf_counter()
        self.stats.loads += 1
        try:
            return await loader()
        except Exception as exc:
            self.events.report(ERROR, key, SOURCE, None, f"loader: {type(exc).__name__}: {exc}")
            raise
        finally:
            self.stats.load_time += time.perf_counter() - start
            self.events.report(LOAD, key, SOURCE, start)

    async def _reread(self, read: Read, newer_than: float | None) -> Any:
        """What another process stored while we waited, or MISSING (none, expired, or older)."""
        try:
            found = await self.store.read(read.full)
        except REDIS_FAILURES as exc:
            self.redis_error(read.key, exc)
            return MISSING
        now = self.clock()
        if found is None or now >= found.expires_at:
            return MISSING
        if newer_than is not None and found.expires_at <= newer_than:
            return MISSING
        self.keep(read, found, now)
        return found.value

    # -- Redis failed ------------------------------------------------------------------------------

    async def fallback(self, read: Read, exc: BaseException) -> Any:
        """Redis failed: ask the source once (shared by concurrent fallbacks of the key), keep
        the value briefly in L1, skip Redis.
        """
        self.redis_error(read.key, exc)  # raises in strict mode

        async def load() -> Any:
            return await self.call_loader(read.key, read.loader)

        if read.stampede.single_flight:
            value, shared = await self.flight.run("fallback:" + read.full, load)
            self.stats.coalesced += shared
        else:
            value = await load()
        if value is not None:
            self.memory.put(read.full, value, min(read.ttl, read.memory_ttl), 0)
        self.stats.misses += 1
        self.events.report(FALLBACK, read.key, SOURCE, read.start, f"{type(exc).__name__}: {exc}")
        return value

    def redis_error(self, key: str, exc: BaseException) -> None:
        """Count and report a Redis failure (re-raised in strict mode). Skipped by the open
        breaker: still an error event, but logged quietly (the breaker logged the outage once).
        """
        log = logger.debug if isinstance(exc, CircuitOpen) else logger.warning
        log("Redis failed for %r: %s: %s", key, type(exc).__name__, exc)
        self.stats.errors += 1
        self.events.report(ERROR, key, L2, None, f"{type(exc).__name__}: {exc}")
        if self.strict:
            raise exc
