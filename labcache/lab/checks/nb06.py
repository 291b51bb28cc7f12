"""Notebook 06's exercise checks: a fleet that loads once, and a cache that survives an outage.

Both checks build caches with the student's factory and test them against the real Redis,
counting source calls, events and TTLs, never timings. Exercise 1's source answers only once
every instance has a load of the key running or waiting (for a lock), so instances that do not
share a lock all load, on any machine. Exercise 2 runs on a hand-moved clock with a source that
is down, hangs (forever) or answers.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import redis.asyncio as aioredis

from labcache.aside import unlink_matching
from labcache.events import CacheEvent
from labcache.lab.data import SourceUnavailable
from labcache.lab.expiry_drill import ManualClock
from labcache.multilevel import MultiLevelCache

FleetFactory = Callable[[aioredis.Redis, str, float], MultiLevelCache]
ResilientFactory = Callable[[aioredis.Redis, str, Callable[[], float]], MultiLevelCache]


def _verdict(problems: list[str], passed: str) -> str:
    if problems:
        return "FAIL:\n  - " + "\n  - ".join(problems)
    return "PASS: " + passed


async def check_fleet_cache(
    make_fleet_cache: FleetFactory, redis: aioredis.Redis, ns: str, ttl: float
) -> str:
    """Exercise 1: 3 instances x 20 requests load once; 20 keys written together get TTLs ±10 %."""
    key = "policy:12345"
    await unlink_matching(redis, ns + "*")
    caches = [make_fleet_cache(redis, ns, ttl) for _ in range(3)]
    problems: list[str] = []
    calls = 0

    async def gated_load() -> dict[str, Any]:
        # Answers once every instance has a load of this key running or waiting (for a lock).
        nonlocal calls
        calls += 1
        for _ in range(500):  # at most about 5 s
            if all(c.waiting(key) for c in caches):
                break
            await asyncio.sleep(0.01)
        return {"id": "12345"}

    try:
        if any(c.namespace != ns for c in caches):
            problems.append(f"namespaces are {[c.namespace for c in caches]}; expected {ns!r}")
        requests = (c.get(key, gated_load) for c in caches for _ in range(20))
        try:
            await asyncio.wait_for(asyncio.gather(*requests), 30)
        except asyncio.TimeoutError:
            problems.append("60 requests did not finish in 30 s: is a lock wait_timeout very long?")
        if calls != 1:
            problems.append(
                f"the source was called {calls} times for 3 instances x 20 requests; expected 1 "
                "(single-flight covers one instance: the instances need a shared lock in Redis)"
            )
        for i in range(20):

            async def instant(i: int = i) -> dict[str, Any]:
                return {"id": i}

            await caches[i % 3].get(f"policy:{i}", instant)
        ttls = [await redis.pttl(caches[0].key(f"policy:{i}")) for i in range(20)]
        low, high = 0.9 * ttl * 1000, 1.1 * ttl * 1000
        if not all(low - 10_000 <= t <= high for t in ttls):  # 10 s for the reads to happen
            problems.append(
                f"TTLs in Redis range {min(ttls) / 1000:.0f}-{max(ttls) / 1000:.0f} s; expected "
                f"{low / 1000:.0f}-{high / 1000:.0f} s (the ttl given, {ttl:g} s, ± 10 %)"
            )
        elif max(ttls) - min(ttls) < 0.02 * ttl * 1000:
            problems.append(
                f"20 keys written together expire within {(max(ttls) - min(ttls)) / 1000:.1f} s "
                "of each other: spread their TTLs"
            )
    finally:
        for c in caches:
            await c.close()
        await unlink_matching(redis, ns + "*")
    return _verdict(
        problems, "one source call for 60 requests on 3 instances, TTLs spread within ±10 %"
    )


async def check_resilient_cache(
    make_resilient_cache: ResilientFactory, redis: aioredis.Redis, ns: str
) -> str:
    """Exercise 2: 4 min 55 s past a 60 s TTL, stale while down or hanging; refreshed once back."""
    key = "policy:10001"
    await unlink_matching(redis, ns + "*")
    clock = ManualClock()
    c = make_resilient_cache(redis, ns, clock)
    seen: list[CacheEvent] = []
    c.events.subscribe(seen.append)
    source: dict[str, Any] = {"state": "up", "version": 1, "calls": 0}
    hang = asyncio.Event()  # never set: a database that hangs

    async def load() -> dict[str, Any]:
        source["calls"] += 1
        if source["state"] == "down":
            raise SourceUnavailable("insurance database unavailable (outage)")
        if source["state"] == "hang":
            await hang.wait()
        return {"id": "10001", "version": source["version"]}

    def answers() -> list[tuple[str, str]]:
        return [(e.kind, e.detail) for e in seen if e.kind in ("hit", "miss", "stale", "fallback")]

    problems: list[str] = []
    try:
        first = await c.get(key, load, ttl=60)
        if c.namespace != ns:
            problems.append(f"namespace is {c.namespace!r}; expected {ns!r}")
        if await redis.pttl(c.key(key)) < 355_000:
            problems.append(
                "Redis drops the entry less than 60 s + 5 min after it was written: the stale "
                "copy is gone when it is needed (how long does Redis keep it?)"
            )
        clock.now += 60 + 295  # 4 min 55 s past the TTL

        source["state"] = "down"
        try:
            if await c.get(key, load, ttl=60) != first:
                problems.append(
                    "during the outage the read returned something else than the last value"
                )
        except Exception as exc:
            problems.append(
                f"during the outage the read raised {type(exc).__name__}: "
                "serve the stale value instead"
            )
        await c.loads.refreshes.join()

        source["state"] = "hang"
        del seen[:]
        try:
            await asyncio.wait_for(c.get(key, load, ttl=60), 2)
            if answers() == [("stale", "revalidating")]:
                problems.append(
                    "while the database hangs the read served the stale value without waiting for "
                    "the refresh at all: wait briefly (a soft timeout), so that a quick database "
                    "gives a fresh value"
                )
            elif answers() != [("stale", "soft timeout")]:
                problems.append(
                    f"while the database hangs the read was answered {answers()}, not stale after "
                    "a soft timeout"
                )
        except asyncio.TimeoutError:
            problems.append(
                "while the database hangs the read did not return the last value within 2 s: "
                "give up on the refresh after about 0.1 s (a soft timeout)"
            )
        await c.close()  # cancels the hanging refresh

        source.update(state="up", version=2, calls=0)
        del seen[:]
        await c.get(key, load, ttl=60)  # fresh, or stale while the refresh runs
        await c.loads.refreshes.join()
        latest = await c.get(key, load, ttl=60)
        if latest.get("version") != 2 or answers()[-1:] != [("hit", "")]:
            problems.append(
                f"with the database back, reads were {[kind for kind, _ in answers()]} and "
                f"returned version {latest.get('version')}: the entry was not refreshed"
            )
        elif source["calls"] != 1:
            problems.append(
                f"with the database back, the source was called {source['calls']} times; expected 1"
            )
    finally:
        await c.close()
        await unlink_matching(redis, ns + "*")
    return _verdict(
        problems,
        "stale during the outage and the hang (after a soft timeout), "
        "refreshed once the database is back",
    )
