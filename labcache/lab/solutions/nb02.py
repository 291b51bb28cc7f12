"""The course's answers to notebook 02's exercises (cache-aside)."""

from __future__ import annotations

from labcache.aside import CacheAside
from labcache.lab.data import InsuranceDB, Row


async def get_customer_cached(
    cache: CacheAside, db: InsuranceDB, customer_id: str, ttl: float
) -> Row | None:
    """Customer `customer_id` from the cache, loaded from `db` on a miss and kept `ttl` seconds."""
    # cache.get looks in Redis first; only on a miss does it call the loader (the database)
    # and store what it returns under the key, with the TTL. The lambda is what makes the
    # database call lazy: it runs only when Redis has no entry.
    return await cache.get(f"customer:{customer_id}", lambda: db.get_customer(customer_id), ttl=ttl)


async def change_email(cache: CacheAside, db: InsuranceDB, customer_id: str, email: str) -> None:
    """Write the new email to the database, then drop the cached copy so the next read loads it."""
    # The order matters. Update first: a reader arriving before the delete finds the old entry
    # for a moment, then the delete removes it. Delete first, and a reader arriving between the
    # two steps misses, loads the old row and caches it again, for a whole TTL.
    await db.update_customer(customer_id, email=email)
    await cache.invalidate(f"customer:{customer_id}")
