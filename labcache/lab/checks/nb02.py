"""Notebook 02's exercise 2 check: a reader that arrives in the middle of a write.

`change_email` has two steps: update the database, delete the cached entry. In production,
reads do not wait for a write to finish: one can arrive between the two steps. If the entry
was deleted first, that reader misses, loads the row the database still holds (the OLD one),
and caches it again; the update then lands, and the cache serves the old email until its TTL
runs out. A check that calls the function alone never sees this: nothing reads in between.

`ReaderBetweenSteps` stages that reader deterministically. It stands in for the database: its
`update_customer` first lets one reader read the customer through the cache (a hit if the entry
is still there, otherwise a miss that re-fills it from the database), and only then applies the
update. With update-then-invalidate, the reader hits the old entry, which is deleted right
after; with invalidate-then-update, the reader re-caches the old row and it stays.
"""

from __future__ import annotations

from typing import Any

from labcache.aside import CacheAside
from labcache.lab.data import InsuranceDB, Row


class ReaderBetweenSteps:
    """A database whose `update_customer` lets a reader through the cache before it writes.

    Every other attribute is the real database's. `updates` counts the updates that went
    through it; `cached_at_update` says, for each, whether the customer's entry was in Redis
    when the update began (False: it had been invalidated before the update).
    """

    def __init__(self, db: InsuranceDB, cache: CacheAside, ttl: float) -> None:
        self.db = db
        self.cache = cache
        self.ttl = ttl
        self.updates = 0
        self.cached_at_update: list[bool] = []

    async def update_customer(self, customer_id: str | int, **changes: Any) -> Row:
        """A reader reads `customer:<id>` through the cache; then the real update runs."""
        self.updates += 1
        key = f"customer:{customer_id}"
        self.cached_at_update.append(bool(await self.cache.redis.exists(self.cache.key(key))))
        await self.cache.get(key, lambda: self.db.get_customer(customer_id), ttl=self.ttl)
        return await self.db.update_customer(customer_id, **changes)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.db, name)
