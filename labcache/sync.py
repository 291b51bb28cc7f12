"""Keeping every instance's L1 in step with Redis (mistake 5: the lab's L1 never hears of a change).

`L1Sync` evicts this instance's L1 copies when another instance announces a change (through the
backplane's pub/sub, or Redis's own client tracking), and announces this instance's changes.
A notice that could not be sent is an error event, never an exception for the caller.
"""

from __future__ import annotations

from collections.abc import Callable

import redis.asyncio as aioredis

from labcache.aside import REDIS_FAILURES
from labcache.backplane import Backplane
from labcache.breaker import guarded
from labcache.cluster import TRACKING_UNSUPPORTED, ClusterBackplane, ClusterUnsupported
from labcache.events import EVICT, L1, EventHub
from labcache.loading import LevelStats
from labcache.memory import Memory
from labcache.store import RedisStore
from labcache.tracking import KeyTracking


class L1Sync:
    """The backplane and/or tracking of one cache, and the evictions they cause."""

    def __init__(
        self,
        store: RedisStore,
        memory: Memory,
        stats: LevelStats,
        events: EventHub,
        on_error: Callable[[str, BaseException], None],
        *,
        backplane: bool = True,
        tracking: bool = False,
    ) -> None:
        if store.on_cluster and tracking:
            raise ClusterUnsupported(TRACKING_UNSUPPORTED)
        self.store = store
        self.memory = memory  # replaced by MultiLevelCache.resize_l1
        self.stats = stats
        self.events = events
        self.on_error = on_error
        redis: aioredis.Redis = store.redis
        self.backplane = (
            (ClusterBackplane if store.on_cluster else Backplane)(
                redis,
                f"{store.namespace}__invalidate__",
                on_keys=self.evict,
                on_pattern=self.evict_matching,
                on_reset=self.evict_all,
            )
            if backplane
            else None
        )
        self.tracking = (
            KeyTracking(redis, store.namespace, on_keys=self.evict, on_flush=self.evict_all)
            if tracking
            else None
        )

    async def start(self) -> None:
        if self.backplane is not None:
            await self.backplane.start()
        if self.tracking is not None:
            await self.tracking.start()

    async def stop(self) -> None:
        if self.backplane is not None:
            await self.backplane.stop()
        if self.tracking is not None:
            await self.tracking.stop()

    async def publish(self, op: str, arg: list[str] | str) -> None:
        """Tell the other instances (`keys`: Redis keys; `pattern`: a Redis glob)."""
        if self.backplane is None:
            return
        try:  # no breaker: a notice that was not sent must leave a sequence gap behind
            await guarded(None, self.backplane.publish(op, arg), self.store.op_timeout)
        except REDIS_FAILURES as exc:  # named as events name keys: the cache's own form
            what = (
                self.store.short(arg)
                if isinstance(arg, str)
                else ",".join(map(self.store.short, arg))
            )
            self.on_error(what, exc)

    def evict(self, fulls: list[str]) -> None:
        """Drop these Redis keys' L1 copies (an EVICT event each that was there)."""
        for full in self.memory.evict(fulls):
            self.stats.l1_evictions += 1
            self.events.report(EVICT, self.store.short(full), L1)

    def evict_matching(self, full_pattern: str) -> None:
        self.evict(self.memory.matching(full_pattern))

    def evict_all(self, reason: str) -> None:
        self.stats.l1_evictions += len(self.memory)
        self.memory.clear()
        self.events.report(EVICT, "*", L1, None, reason)
