"""The course's answers to notebook 07 (write-through and write-behind)."""

from __future__ import annotations

from typing import cast

import redis.asyncio as aioredis
from redis.typing import EncodableT

from labcache.lab.data import Row
from labcache.lab.writes import InsuranceWriteThrough


async def rename_customer(wt: InsuranceWriteThrough, cid: str, new_name: str) -> Row:
    """Rename a customer in one write-through call that also drops their cached policies."""
    # The database first, then the new customer row into the cache (L1, Redis, other L1s).
    # A cached policy carries the holder's name, so every policy tagged with this customer is
    # now stale: drop_tags invalidates exactly those keys (a pattern like "policy:*" would
    # also drop every other customer's policies).
    return await wt.update_customer(cid, name=new_name, drop_tags=[f"customer:{cid}"])


async def deliver_out_of_order(redis: aioredis.Redis, ordered: str, shuffled: str) -> None:
    """Copy the entries of `ordered` into `shuffled` newest first, then delete `ordered`."""
    # Oldest first: [(entry id, {field: value}), ...].
    entries = cast(list[tuple[bytes, dict[EncodableT, EncodableT]]], await redis.xrange(ordered))
    for _entry_id, fields in reversed(entries):
        # XADD gives each copy a new id, so the stream's order is the order of these calls:
        # the newest write now comes first. The fields (and the version inside) are unchanged.
        await redis.xadd(shuffled, fields)
    await redis.delete(ordered)  # the flusher must see each write once, from `shuffled` only
