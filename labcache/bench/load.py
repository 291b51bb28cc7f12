"""Scenarios 6, 7 and 9: many requests at once (stampede), a seeded Zipf workload, memory."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any, cast

from labcache import entry
from labcache.aside import CacheAside
from labcache.bench.core import Ctx, Result, Row, fmt_time, median, pct, percentile, set_ratios
from labcache.bench.peers import Peers
from labcache.bench.versus import make_peer
from labcache.lab.data import InsuranceDB, Latency
from labcache.multilevel import MultiLevelCache

S6, S7, S9 = "6 stampede", "7 Zipf workload", "9 memory"
N_KEYS = 1000  # policies and customers the Zipf workload draws from (and the 80 quotes)
WORKERS = 32  # concurrent requests in the long memory run (its Redis round trips overlap)

# One burst: (requests that got a wrong value, per-request latencies in seconds, wall seconds).
Burst = tuple[int, list[float], float]


async def _burst(n: int, get: Callable[[], Awaitable[Any]], want: Any) -> Burst:
    """`n` requests that all arrive at once; each latency counts from the common start."""
    latencies: list[float] = []
    wrong = 0
    t0 = time.perf_counter()

    async def one() -> None:
        nonlocal wrong
        try:
            wrong += (await get()) != want
        except Exception:  # a failed request is a wrong answer; the burst goes on
            wrong += 1
        latencies.append(time.perf_counter() - t0)

    await asyncio.gather(*(one() for _ in range(n)))
    return wrong, latencies, time.perf_counter() - t0


def _thread_burst(n: int, get: Callable[[], Any], want: Any) -> Burst:
    """The same burst from `n` threads (how dogpile.cache's users call it)."""
    latencies: list[float] = []
    wrong = [0]
    lock = threading.Lock()
    barrier = threading.Barrier(n + 1)
    start = [0.0]

    def worker() -> None:
        barrier.wait()
        try:
            got = get()
        except Exception as exc:  # counted as a wrong answer, never a hung burst
            got = exc
        done = time.perf_counter() - start[0]
        with lock:
            latencies.append(done)
            wrong[0] += got != want

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(n)]
    for t in threads:
        t.start()
    start[0] = time.perf_counter()
    barrier.wait()
    for t in threads:
        t.join()
    return wrong[0], latencies, time.perf_counter() - start[0]


async def stampede(ctx: Ctx) -> Result:
    """`n` concurrent gets of one cold key whose loader sleeps: how many loads, how long."""
    res = Result()
    plan, value = ctx.plan, ctx.policies[0]
    n, sleep = plan.stampede_n, plan.loader_sleep
    peers = Peers(ctx.url)
    calls: Counter[str] = Counter()
    bursts: dict[str, Callable[[int], Awaitable[Burst]]] = {}
    caches: list[MultiLevelCache] = []

    def labcache(name: str, **options: Any) -> None:
        cache = MultiLevelCache(ctx.redis, namespace=ctx.ns(f"s6-{len(caches)}"), **options)
        caches.append(cache)

        async def loader() -> Any:
            calls[name] += 1
            await asyncio.sleep(sleep)
            return value

        async def burst(r: int) -> Burst:
            return await _burst(n, lambda: cache.get(f"cold:{r}", loader), value)

        bursts[name] = burst

    labcache("labcache single-flight (default)")
    labcache("labcache, no protection (single_flight=False)", single_flight=False)

    async def cashews() -> Any:
        cache = await peers.cashews("redis")
        name = "cashews @cache(lock=True)"

        @cache(ttl="5m", key=ctx.ns("s6cashews") + "cold:{r}", lock=True)  # type: ignore[untyped-decorator]
        async def load(r: int) -> Any:
            calls[name] += 1
            await asyncio.sleep(sleep)
            return value

        async def burst(r: int) -> Burst:
            return await _burst(n, lambda: load(r), value)

        return name, burst

    async def aiocache() -> Any:
        from aiocache import RedisCache
        from aiocache.decorators import cached_stampede

        name = "aiocache @cached_stampede (RedLock)"
        kwargs = peers.aiocache_kwargs(ctx.ns("s6aiocache"))

        @cached_stampede(lease=2, ttl=300, key_builder=lambda f, r: f"cold:{r}",
                         cache=RedisCache, **kwargs)  # type: ignore[untyped-decorator]  # fmt: skip
        async def load(r: int) -> Any:
            calls[name] += 1
            await asyncio.sleep(sleep)
            return value

        async def close() -> None:
            await load.cache.close()

        peers._closers.append(close)

        async def burst(r: int) -> Burst:
            return await _burst(n, lambda: load(r), value)

        return name, burst

    async def dogpile() -> Any:
        region = peers.dogpile("redis")
        name = "dogpile.cache get_or_create (threads)"
        counted = threading.Lock()

        def creator() -> Any:
            with counted:
                calls[name] += 1
            time.sleep(sleep)
            return value

        async def burst(r: int) -> Burst:
            key = ctx.ns("s6dogpile") + f"cold:{r}"
            return await asyncio.to_thread(
                _thread_burst, n, lambda: region.get_or_create(key, creator), value
            )

        return name, burst

    async def wrap(make: Callable[[], Awaitable[Any]]) -> Any:
        name, burst = await make()
        bursts[name] = burst
        return name

    try:
        for cache in caches:
            await cache.start()
        for label, make in (
            ("cashews @cache(lock=True)", cashews),
            ("aiocache @cached_stampede (RedLock)", aiocache),
            ("dogpile.cache get_or_create (threads)", dogpile),
        ):
            await make_peer(res, S6, label, lambda make=make: wrap(make))  # type: ignore[misc]
        names = list(bursts)
        latencies: dict[str, list[float]] = {m: [] for m in names}
        walls: dict[str, list[float]] = {m: [] for m in names}
        per_round: dict[str, list[int]] = {m: [] for m in names}
        wrong: Counter[str] = Counter()
        for r in range(plan.stampede_rounds):
            for i in range(len(names)):
                name = names[(r + i) % len(names)]
                before = calls[name]
                bad, lat, wall = await bursts[name](r)
                wrong[name] += bad
                per_round[name].append(calls[name] - before)
                latencies[name] += lat
                walls[name].append(wall)

    finally:
        await peers.close()
        for cache in caches:
            await cache.close()
    rows = []
    for name in names:
        lat = latencies[name]
        rows.append(Row(S6, f"{name}: {n:,} concurrent gets", median=median(lat),
                        p99=percentile(lat, 99), ops_per_s=n / median(walls[name]),
                        samples=len(lat), reference=name == names[0],
                        extra={"loader_calls": per_round[name]}))  # fmt: skip
        worst = max(per_round[name])
        rows[-1].notes = f"loader calls per burst: {median(per_round[name]):g} (max {worst})"
    set_ratios(rows)
    ours = max(per_round[names[0]])
    others = [max(per_round[m]) for m in names[2:]]
    rows[0].target = "fewest loader calls"
    rows[0].met = all(ours <= o for o in others)
    res.rows = rows + res.rows
    res.check(S6, "single-flight: one loader call per burst", ours == 1,
              f"loader calls per burst: {per_round[names[0]]}")  # fmt: skip
    for name in names[:2]:
        res.check(S6, f"{name}: every request got the loaded value", wrong[name] == 0,
                  f"{wrong[name]} wrong of {n * plan.stampede_rounds}")  # fmt: skip
    for name in names[2:]:
        if wrong[name]:
            rows[names.index(name)].notes += f"; {wrong[name]} requests got a wrong value"
    return res


# -- scenario 7 ----------------------------------------------------------------------------


async def workload(ctx: Ctx) -> Result:
    """The lab's 60/30/10 mix with Zipf keys, open loop: levels, latency, source calls."""
    from labcache.lab.workload import Workload

    res = Result()
    plan = ctx.plan
    per_round = plan.workload_requests // plan.workload_rounds
    ttl = max(0.2, plan.workload_requests / plan.workload_rate / 4)  # entries expire in the run
    db = InsuranceDB(latency_scale=0.1)  # 10 ms policy, 8 ms customer, 20 ms quote
    redis = ctx.redis
    made: list[tuple[str, Any]] = [
        ("CacheAside (Part 2)", CacheAside(redis, namespace=ctx.ns("s7a"), default_ttl=ttl)),
        ("MultiLevelCache", MultiLevelCache(redis, namespace=ctx.ns("s7m"), default_ttl=ttl,
                                            memory_ttl=ttl / 2)),
    ]  # fmt: skip
    options: list[tuple[str, dict[str, Any]]] = [
        ("XFetch early_refresh=1", {"early_refresh": 1.0}),
        ("SWR grace=ttl", {"grace": ttl}),
    ]
    for label, option in options:
        try:
            cache = MultiLevelCache(redis, namespace=ctx.ns(f"s7{len(made)}"), default_ttl=ttl,
                                    memory_ttl=ttl / 2, **option)  # fmt: skip
        except TypeError as exc:  # an option this MultiLevelCache does not have
            res.skipped(S7, f"MultiLevelCache + {label}", f"not available: {exc}")
            continue
        made.append((f"MultiLevelCache + {label}", cache))
    source_calls: Counter[str] = Counter()
    loads: dict[str, Workload] = {}
    for name, cache in made:
        wl = Workload(cache, db, rate=plan.workload_rate, requests=per_round, skew=1.0, seed=7,
                      n_keys=N_KEYS)  # fmt: skip

        def counted(fn: Callable[[Any], Awaitable[Any]], name: str = name) -> Any:
            async def call(arg: Any) -> Any:
                source_calls[name] += 1
                return await fn(arg)

            return call

        wl.loaders = {kind: counted(fn) for kind, fn in wl.loaders.items()}
        loads[name] = wl
    frames: dict[str, list[Any]] = {name: [] for name, _ in made}
    walls: dict[str, float] = dict.fromkeys(frames, 0.0)
    try:
        for _, cache in made:
            if isinstance(cache, MultiLevelCache):
                await cache.start()
        for r in range(plan.workload_rounds):
            for i in range(len(made)):
                name, _ = made[(r + i) % len(made)]
                t0 = time.perf_counter()
                frames[name].append(await loads[name].run())
                walls[name] += time.perf_counter() - t0
    finally:
        for _, cache in made:
            if isinstance(cache, MultiLevelCache):
                await cache.close()
        db.close()
    import pandas as pd

    rows: list[Row] = []
    for name, _ in made:
        frame = pd.concat(frames[name], ignore_index=True)
        levels = frame["level"].value_counts()
        total = len(frame)
        lat = (frame["latency_ms"] / 1000).tolist()
        errors = int((frame["error"] != "").sum())
        shares = " · ".join(f"{lv} {pct(int(levels.get(lv, 0)), total)}"
                            for lv in ("l1", "l2", "stale", "source"))  # fmt: skip
        rows.append(Row(S7, f"{name}: {total:,} requests", median=median(lat),
                        p99=percentile(lat, 99), ops_per_s=total / walls[name], samples=total,
                        reference=not rows,
                        notes=f"{shares}; {source_calls[name]:,} source calls",
                        extra={"levels": {k: int(v) for k, v in levels.items()},
                               "source_calls": source_calls[name], "errors": errors,
                               "ttl_s": ttl}))  # fmt: skip
        unlabelled = int((~frame["level"].isin(["l1", "l2", "stale", "source"])).sum())
        res.check(S7, f"{name}: every request served and labelled with its level",
                  errors == 0 and unlabelled == 0,
                  f"{errors} errors, {unlabelled} requests without a level")  # fmt: skip
    set_ratios(rows)
    res.rows = rows + res.rows
    return res


# -- scenario 9 ----------------------------------------------------------------------------


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
    cache = MultiLevelCache(redis, namespace=ctx.ns("s9"), l1_maxsize=m, backplane=False)
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
                              f"+ labcache/cachetools overhead {overhead_b:,.0f} B "
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
    cache = MultiLevelCache(ctx.redis, namespace=ctx.ns("s9z"), l1_maxsize=limit, backplane=False)
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
