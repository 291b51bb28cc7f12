"""A fleet of OS processes, each with its own cache, asking for one cold key at the same moment.

Notebook 06 runs it to show that single-flight covers one process and a lock in Redis covers
the fleet. Each process (`python -m labcache.lab.fleet <namespace> <requests>`) runs `worker`:
three scenarios in turn (no lock, the lock, the lock held by a dead holder), each on a
namespace of its own, starting together at a barrier in Redis. The loader counts its calls in
Redis, since every process has its own loader. `run_fleet` starts the processes, plays the
dead holder, releases the barriers and gathers one row per scenario.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from typing import Any

import pandas as pd
import redis.asyncio as aioredis

from labcache.lab.student import child_url
from labcache.multilevel import MultiLevelCache, Stampede
from labcache.stampede import DistributedLock

SCENARIOS = (("no-lock", False), ("lock", True), ("dead-holder", True))
KEY = "policy:12345"


async def worker(redis: aioredis.Redis, base: str, requests: int) -> list[dict[str, Any]]:
    """What each process runs: `requests` concurrent reads of one cold key per scenario."""
    results = []
    for scenario, use_lock in SCENARIOS:
        ns = f"{base}{scenario}:"
        lock = DistributedLock(redis, ns, wait_timeout=10, poll_interval=0.02) if use_lock else None
        cache = MultiLevelCache(redis, namespace=ns, backplane=False, stampede=Stampede(lock=lock))

        async def load_policy(ns: str = ns) -> dict[str, Any]:
            await redis.incr(ns + "source_calls")  # the fleet-wide count
            await asyncio.sleep(0.5)  # a slow query: the window in which the others arrive
            return {"id": "12345", "premium": 1250.0}

        await redis.incr(ns + "ready")
        await redis.blpop([ns + "go"], timeout=300)  # wait for the notebook's signal
        await asyncio.gather(*(cache.get(KEY, load_policy) for _ in range(requests)))
        await cache.close()
        stats = cache.stampede_stats.as_dict()
        results.append({"scenario": scenario, "loads": cache.stats.loads, **stats})
        await redis.incr(ns + "done")
    return results


async def _count(redis: aioredis.Redis, key: str) -> int:
    return int(await redis.get(key) or 0)


async def _wait_for_count(redis: aioredis.Redis, key: str, n: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while await _count(redis, key) < n:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{key} did not reach {n}")
        await asyncio.sleep(0.01)


async def run_fleet(
    redis: aioredis.Redis, base: str, *, processes: int = 4, requests: int = 25
) -> pd.DataFrame:
    """Start `processes` workers on keys under `base`; one row of counts per scenario."""
    async for key in redis.scan_iter(match=base + "*"):
        await redis.unlink(key)
    env = {**os.environ, "REDIS_URL": child_url(redis)}
    command = (sys.executable, "-m", "labcache.lab.fleet", base, str(requests))
    procs = [
        await asyncio.create_subprocess_exec(*command, stdout=asyncio.subprocess.PIPE, env=env)
        for _ in range(processes)
    ]
    try:
        rows = []
        for scenario, _ in SCENARIOS:
            ns = f"{base}{scenario}:"
            await _wait_for_count(redis, ns + "ready", processes)
            if scenario == "dead-holder":  # it took the lock, then crashed: nobody releases it
                await redis.set(f"{ns}__lock__:{KEY}", "token-of-a-crashed-process", px=300)
            await redis.rpush(ns + "go", *["go"] * processes)
            await _wait_for_count(redis, ns + "done", processes)
            calls = await _count(redis, ns + "source_calls")
            rows.append(
                {
                    "scenario": scenario,
                    "processes": processes,
                    "requests": processes * requests,
                    "database calls": calls,
                }
            )
        outputs = [(await p.communicate())[0].decode() for p in procs]
    finally:
        for p in procs:
            if p.returncode is None:
                p.kill()
                await p.wait()
    lines = [json.loads(line) for out in outputs for line in out.splitlines()]
    counts = ["loads", "lock_waits", "lock_timeouts"]
    stats = pd.DataFrame(lines).groupby("scenario", sort=False)[counts].sum()
    table = pd.DataFrame(rows).set_index("scenario").join(stats)
    names = {
        "loads": "processes that loaded",
        "lock_waits": "processes that waited",
        "lock_timeouts": "waits timed out",
    }
    return table.rename(columns=names)


async def _main(base: str, requests: int) -> None:
    redis = aioredis.from_url(os.environ["REDIS_URL"])
    try:
        for result in await worker(redis, base, requests):
            print(json.dumps(result), flush=True)
    finally:
        await redis.aclose()


if __name__ == "__main__":
    asyncio.run(_main(sys.argv[1], int(sys.argv[2])))
