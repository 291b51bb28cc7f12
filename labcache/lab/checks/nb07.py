"""Notebook 07's exercise checks: what each one sets up, calls, and reads back.

The check cells call these and turn the problems into PASS or FAIL. The student's function is
passed in; a stub's NotImplementedError goes up unchanged, so `@self_check` can say "NOT
ATTEMPTED". Both checks put back what they changed (a name, streams, cache entries).
"""

from __future__ import annotations

import functools
import json
import sqlite3
from collections.abc import Awaitable, Callable
from typing import Any

import redis.asyncio as aioredis

from labcache.flusher import Flusher
from labcache.lab.data import InsuranceDB
from labcache.lab.writes import InsuranceWriteBehind, InsuranceWriteThrough
from labcache.multilevel import MultiLevelCache


def _committed(peek: sqlite3.Connection, sql: str, row_id: str) -> Any:
    return peek.execute(sql, (row_id,)).fetchone()[0]


async def rename_problems(
    rename_customer: Callable[[InsuranceWriteThrough, str, str], Awaitable[Any]],
    cache: MultiLevelCache,
    db: InsuranceDB,
    setup_db: InsuranceDB,
    peek: sqlite3.Connection,
    cid: str,
    new_name: str,
    other: str,
) -> tuple[list[str], int]:
    """Exercise 1: (problems, number of `cid`'s policies) after `rename_customer(wt, cid, name)`.

    Caches both customers' policies tagged `customer:<holder>` and the customer `cid`, calls the
    function with a fresh `InsuranceWriteThrough(cache, db)`, then counts the database calls,
    reads the customer and the policies back through the cache, and looks for `other`'s
    entries in Redis. The old name is put back and the check's entries dropped at the end.
    """
    name_sql = "SELECT name FROM customers WHERE id = ?"
    mine, theirs = (
        await setup_db.policies_of_customer(cid),
        await setup_db.policies_of_customer(other),
    )
    old_name = _committed(peek, name_sql, cid)
    for holder, pids in ((cid, mine), (other, theirs)):
        await cache.invalidate(*[f"policy:{pid}" for pid in pids])  # copies cached untagged before
        for pid in pids:
            await cache.get(
                f"policy:{pid}",
                functools.partial(setup_db.get_policy, pid),
                tags=[f"customer:{holder}"],
            )
    await cache.get(f"customer:{cid}", lambda: setup_db.get_customer(cid))
    db.reset_calls()
    problems = []
    try:
        await rename_customer(InsuranceWriteThrough(cache, db), cid, new_name)
        stored = _committed(peek, name_sql, cid)
        if db.calls["update_customer"] != 1 or stored != new_name:
            problems.append(
                f"{db.calls['update_customer']} database update(s), and the database says "
                f"{stored!r}: expected 1 update to {new_name!r}"
            )
        gone = [pid for pid in theirs if not await cache.redis.exists(cache.key(f"policy:{pid}"))]
        if gone:
            problems.append(
                f"{len(gone)} of customer {other}'s {len(theirs)} cached policies were dropped "
                "too, though their holder did not change: drop this customer's tag, not a "
                "pattern such as policy:*"
            )
        customer: Any = await cache.get(f"customer:{cid}", lambda: db.get_customer(cid))
        if customer["name"] != new_name:
            problems.append(
                f"the cache still serves customer {cid} as {customer['name']!r}: write the new "
                "row to the cache too"
            )
        elif db.calls["get_customer"]:
            problems.append(
                "reading the customer went to the database: a write-through leaves the new row "
                "in the cache"
            )
        stale = []
        for pid in mine:
            policy: Any = await cache.get(f"policy:{pid}", functools.partial(db.get_policy, pid))
            if policy["holder"] != new_name:
                stale.append(pid)
        if stale:
            problems.append(
                f"{len(stale)} of {len(mine)} cached policies of customer {cid} still show the "
                f"holder {old_name!r}: drop the policies tagged customer:{cid}"
            )
    finally:  # the old name back, and none of this check's entries left in the cache
        await setup_db.update_customer(cid, name=old_name)
        for tag in (f"customer:{cid}", f"customer:{other}"):
            await cache.invalidate_tag(tag)
        await cache.invalidate(f"customer:{cid}", *[f"policy:{pid}" for pid in mine + theirs])
    return problems, len(mine)


async def out_of_order_problems(
    deliver_out_of_order: Callable[[aioredis.Redis, str, str], Awaitable[Any]],
    cache: MultiLevelCache,
    db: InsuranceDB,
    setup_db: InsuranceDB,
    peek: sqlite3.Connection,
    pid: str,
) -> list[str]:
    """Exercise 2: the problems after two queued writes (111.0, then 222.0) are re-delivered.

    Queues the two write-behind updates of policy `pid` in a stream of their own, with no
    flusher; calls `deliver_out_of_order(redis, ordered, shuffled)`; runs a flusher on
    `shuffled`, and checks the copies' order, the database's premium and the flusher's counts.
    """
    redis = cache.redis
    ordered, shuffled = cache.namespace + "__exercise__", cache.namespace + "__shuffled__"
    premium_sql = "SELECT premium FROM policies WHERE id = ?"
    queue = InsuranceWriteBehind(cache, db, stream="__exercise__")  # no flusher: writes stay queued
    await redis.delete(ordered, shuffled, shuffled + ":dead")
    await cache.get(f"policy:{pid}", lambda: setup_db.get_policy(pid))
    await queue.update_policy(pid, premium=111.0)
    await queue.update_policy(pid, premium=222.0)
    problems = []
    try:
        await deliver_out_of_order(redis, ordered, shuffled)
        copies: Any = await redis.xrange(shuffled)
        premiums = [
            json.loads(f[b"fields"])["premium"] if b"fields" in f else None for _, f in copies
        ]
        flusher = Flusher(redis, db, shuffled)
        await flusher.flush()
        if await redis.exists(ordered):
            problems.append(
                f"{ordered} still exists: delete it once the copies are made (a flusher on it "
                "would deliver both writes again)"
            )
        if premiums != [222.0, 111.0]:
            problems.append(
                f"{shuffled} holds the premiums {premiums}; expected [222.0, 111.0] (newest first)"
            )
        if _committed(peek, premium_sql, pid) != 222.0:
            problems.append(
                f"the database has {_committed(peek, premium_sql, pid)}: the older write won"
            )
        if (flusher.stats.applied, flusher.stats.stale) != (1, 1):
            problems.append(
                f"the flusher applied {flusher.stats.applied} and skipped {flusher.stats.stale} "
                "as stale; expected 1 and 1: the newest write first, then the older one, which "
                "its version marks as stale"
            )
    finally:
        await redis.delete(ordered, shuffled, shuffled + ":dead", queue.version_key)
    return problems
