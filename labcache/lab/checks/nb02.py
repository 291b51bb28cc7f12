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

import json
from collections.abc import Awaitable, Callable
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


def _verdict(problems: list[str], passed: str) -> str:
    return "\n  - ".join(["FAIL:", *problems]) if problems else passed


async def check_customer_cached(
    get_customer_cached: Callable[..., Awaitable[Any]],
    cache: CacheAside,
    db: InsuranceDB,
    ttl: float,
) -> str:
    """Exercise 1's check: two reads of customer 60001, one database call, the key with `ttl`.

    It starts and ends with the entry deleted, so it leaves nothing behind.
    """
    key = "customer:60001"
    await cache.invalidate(key)  # start cold, whatever ran before
    db.reset_calls()
    try:
        first = await get_customer_cached(cache, db, "60001", ttl)
        second = await get_customer_cached(cache, db, "60001", ttl)
        left_ms = await cache.redis.pttl(cache.key(key))  # -2: no such key, -1: never expires
    finally:
        await cache.invalidate(key)
    problems = []
    if not isinstance(first, dict) or first.get("id") != "60001":
        problems.append(f"the first call returned {first!r}, not customer 60001")
    if second != first:
        problems.append("the second call returned something different from the first")
    if db.calls["get_customer"] != 1:
        problems.append(
            f"two reads called the database {db.calls['get_customer']} times; expected 1"
        )
    if left_ms == -2:
        problems.append(f"{cache.key(key)} is not in Redis: use the key {key!r} with cache.get")
    elif left_ms == -1:
        problems.append(f"{cache.key(key)} never expires: pass ttl=ttl to cache.get")
    elif not (ttl - 10) * 1000 < left_ms <= ttl * 1000:
        problems.append(
            f"the TTL is {left_ms / 1000:.0f} s; expected the ttl passed in, "
            f"CUSTOMER_CACHE_TTL = {ttl} s"
        )
    return _verdict(
        problems,
        f"PASS: two reads, one database call, and {cache.key(key)} expires after "
        f"CUSTOMER_CACHE_TTL ({ttl} s).",
    )


async def check_change_email(
    change_email: Callable[..., Awaitable[Any]], cache: CacheAside, db: InsuranceDB, ttl: float
) -> str:
    """Exercise 2's check: with a reader between the two steps, the next read sees the new email.

    It warms the entry, runs `change_email` on a `ReaderBetweenSteps`, looks at what Redis
    holds, reads once more, then puts the old email back and deletes the entry.
    """
    key, new_email = "customer:60001", "ines.fischer@example.org"

    async def load() -> Row:
        row = await db.get_customer("60001")
        assert row is not None, "customer 60001 is in the course's data"
        return row

    old_email = (await cache.get(key, load, ttl=ttl))["email"]  # warm: cached
    staged = ReaderBetweenSteps(db, cache, ttl=ttl)  # a reader mid-write
    try:
        await change_email(cache, staged, "60001", new_email)
        raw = await cache.redis.get(cache.key(key))
        cached = json.loads(raw)["email"] if raw is not None else None
        db.reset_calls()
        after = (await cache.get(key, load, ttl=ttl))["email"]
    finally:  # put the old email back, and leave nothing in the cache
        await db.update_customer("60001", email=old_email)
        await cache.invalidate(key)
    problems = []
    if staged.updates != 1:
        problems.append(
            f"the `db` passed to change_email saw {staged.updates} updates; expected 1: "
            "call db.update_customer on it"
        )
    if cached == old_email and staged.cached_at_update[:1] == [False]:
        problems.append(
            "you invalidated BEFORE updating: a reader that came between your two steps missed, "
            "loaded the old row and cached it again, so the cache still serves the old copy "
            f"({old_email!r}) until its TTL runs out. Update the database first, then invalidate."
        )
    elif cached == old_email:
        problems.append(
            f"after change_email the cache still serves the old copy ({old_email!r}): "
            f"invalidate {key!r} after the update"
        )
    elif after != new_email:
        problems.append(
            f"the next read returned {after!r}, not {new_email!r}: "
            "the database still holds the old email"
        )
    elif db.calls["get_customer"] != 1:
        problems.append(
            f"the next read called the database {db.calls['get_customer']} times; "
            "expected 1 (a miss): delete the entry, do not rewrite it"
        )
    return _verdict(
        problems,
        "PASS: one update, then the entry was gone: a reader in between could not keep the old "
        "email, and the next read loaded the new one.",
    )
