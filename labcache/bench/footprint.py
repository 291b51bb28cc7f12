"""Scenario 9: bytes per L1 entry and per Redis key, and L1 bounded under a long Zipf run."""

from __future__ import annotations

import asyncio
import json
import time
from typing import cast

from labcache import entry
from labcache.bench.core import Ctx, Result, Row, fmt_time, median, pct
from labcache.lab.data import InsuranceDB, Latency
from labcache.multilevel import Memory, MultiLevelCache

S9 = "9 memory"
WORKERS = 32  # concurrent requests in the long run (their Redis round trips overlap)


def _rss() -> tuple[int, str]:
    try:
        import psutil  # type: ignore[import-untyped]

        return int(psutil.Process().memory_info().rss), "RSS"
    except ImportError:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "peak RSS"


async def memory(ctx: Ctx) -> Result:
    """Bytes per L1 entry and per Redis key for a policy; L1 bounded under a long Zipf run."""
    import tracemalloc

    res = Result()
    plan, redis = ctx.plan, ctx.redis
    m = plan.memory_entries
    raws = [json.dumps(ctx.policies[i % len(ctx.policies)]).encode() for i in range(m)]
    cache = MultiLevelCache(redis, namespace=ctx.ns("s9"), backplane=False, l1=Memory(m))
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        values = [json.loads(raw) for raw in raws]  # L1 keeps decoded objects, one per key
        after_values = tracemalloc.get_traced_memory()[0]
        expires = cache.clock() + 300
        for i, v in enumerate(values):
            cache.fill_l1(f"policy:{i}", v, expires_at=expires, size=len(raws[i]))
        after_l1 = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    value_b, overhead_b = (after_values - base) / m, (after_l1 - after_values) / m
    res.rows.append(Row(S9, "L1 entry: a policy object (tracemalloc)", samples=m,
                        notes=f"{value_b + overhead_b:,.0f} B per entry = value {value_b:,.0f} B "
                              f"+ L1 overhead {overhead_b:,.0f} B "
                              f"(JSON {sum(map(len, raws)) / m:,.0f} B)",
                        extra={"value_bytes": value_b, "overhead_bytes": overhead_b}))  # fmt: skip
    sample = min(100, m)
    usages, bare, header = [], [], 0
    for i in range(sample):
        await cache.set(f"mem:{i}", values[i])
        usages.append(int(await redis.memory_usage(cache.key(f"mem:{i}")) or 0))
        data = cast(bytes, await redis.get(cache.key(f"mem:{i}")))
        payload = entry.decode(data).payload  # the same JSON, without labcache's header
        header = len(data) - len(payload)
        await redis.set(cache.key(f"raw:{i}"), payload, ex=300)
        bare.append(int(await redis.memory_usage(cache.key(f"raw:{i}")) or 0))
    res.rows.append(Row(S9, "Redis key: a policy (MEMORY USAGE)", samples=sample,
                        notes=f"labcache record {median(usages):,.0f} B ({header} B header); "
                              f"the bare JSON {median(bare):,.0f} B",
                        extra={"record_bytes": usages, "bare_bytes": bare}))  # fmt: skip
    await ctx.clean(cache.namespace)
    await _bounded_run(ctx, res)
    return res


async def _bounded_run(ctx: Ctx, res: Result) -> None:
    from labcache.lab.workload import RequestStream, lab_quote_requests

    n, limit = ctx.plan.memory_requests, 1000
    db = InsuranceDB(latency=Latency.zero())
    stream = RequestStream({"policy": db.policy_ids(), "customer": db.customer_ids(),
                            "quote": lab_quote_requests()}, skew=1.0, seed=9)  # fmt: skip
    loaders = {"policy": db.get_policy, "customer": db.get_customer, "quote": db.calculate_quote}
    cache = MultiLevelCache(ctx.redis, namespace=ctx.ns("s9z"), backplane=False, l1=Memory(limit))
    largest = 0
    rss_before, what = _rss()
    t0 = time.perf_counter()
    issued = 0

    async def worker() -> None:
        nonlocal issued, largest
        while issued < n:
            issued += 1
            req = stream.next()  # one seeded stream; workers take turns drawing from it
            load, arg = loaders[req.kind], req.arg
            await cache.get(req.key, lambda load=load, arg=arg: load(arg))  # type: ignore[misc]
            if issued % 997 == 0:
                largest = max(largest, len(cache.l1))

    try:
        await asyncio.gather(*(worker() for _ in range(WORKERS)))
        largest = max(largest, len(cache.l1))
    finally:
        db.close()
        await ctx.clean(cache.namespace)
    elapsed = time.perf_counter() - t0
    rss_after, _ = _rss()
    s = cache.stats

    def mib(n: int) -> str:
        return f"{n / 2**20:,.0f}"

    res.rows.append(Row(S9, f"L1 under a {n:,}-request Zipf run (limit {limit:,}, "
                            f"{WORKERS} concurrent)",
                        median=elapsed / n, samples=n,
                        notes=f"largest L1 {largest:,} entries; {what} {mib(rss_before)} → "
                              f"{mib(rss_after)} MiB; L1 {pct(s.l1_hits, s.requests)} · "
                              f"L2 {pct(s.l2_hits, s.requests)} · "
                              f"source {pct(s.misses, s.requests)} ({fmt_time(elapsed)} in all)",
                        extra={"largest": largest, "rss_before": rss_before,
                               "rss_after": rss_after, **s.as_dict()}))  # fmt: skip
    res.check(S9, "L1 stays within its limit", largest <= limit,
              f"largest {largest} entries, limit {limit}")  # fmt: skip
    res.check(S9, "every request counted at one level", s.requests == n,
              f"{s.requests} of {n}")  # fmt: skip
