"""Write-through and write-behind with the course's verbs, on the insurance database.

The library's `WriteThrough` and `WriteBehind` update any `WriteSink` by table and row id
(`update("policies", "10002", premium=1500.0)`). These add `update_policy` and
`update_customer`, and the course's cache keys (`policy:<id>`, `customer:<id>`), so a notebook
reads like the lab.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from labcache.lab.data import InsuranceDB, Row
from labcache.multilevel import MultiLevelCache
from labcache.writes import WriteBehind, WriteThrough

# The course's cache key kind of each table a write may change.
INSURANCE_KEYS: Mapping[str, str] = {"policies": "policy", "customers": "customer"}


class InsuranceWriteThrough(WriteThrough):
    """`WriteThrough` on an `InsuranceDB`, with `update_policy` and `update_customer`."""

    def __init__(
        self,
        cache: MultiLevelCache,
        db: InsuranceDB,
        *,
        keys: Mapping[str, str] = INSURANCE_KEYS,
        ttl: float | None = None,
    ) -> None:
        super().__init__(cache, db, keys=keys, ttl=ttl)

    async def update_policy(
        self,
        policy_id: str | int,
        *,
        ttl: float | None = None,
        tags: Iterable[str] = (),
        drop_tags: Iterable[str] = (),
        **changes: Any,
    ) -> Row:
        """`update("policies", policy_id, ...)`: the database, then `policy:<id>` in the cache."""
        return await self.update(
            "policies", policy_id, ttl=ttl, tags=tags, drop_tags=drop_tags, **changes
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
        """`update("customers", customer_id, ...)`: the database, then `customer:<id>`."""
        return await self.update(
            "customers", customer_id, ttl=ttl, tags=tags, drop_tags=drop_tags, **changes
        )


class InsuranceWriteBehind(WriteBehind):
    """`WriteBehind` on an `InsuranceDB`, with `update_policy` and `update_customer`."""

    def __init__(
        self,
        cache: MultiLevelCache,
        db: InsuranceDB,
        *,
        keys: Mapping[str, str] = INSURANCE_KEYS,
        **options: Any,
    ) -> None:
        """`options` are `WriteBehind`'s: stream, group, consumer, batch_size, interval, ..."""
        super().__init__(cache, db, keys=keys, **options)

    async def update_policy(
        self, policy_id: str | int, *, ttl: float | None = None, **changes: Any
    ) -> Row:
        """`update("policies", policy_id, ...)`: the cached policy now, the database later."""
        return await self.update("policies", policy_id, ttl=ttl, **changes)

    async def update_customer(
        self, customer_id: str | int, *, ttl: float | None = None, **changes: Any
    ) -> Row:
        """`update("customers", customer_id, ...)`: the cached customer now, the database later."""
        return await self.update("customers", customer_id, ttl=ttl, **changes)
