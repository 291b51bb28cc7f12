"""Scenarios 6 and 7: many requests at once (stampede) and a seeded Zipf workload."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

from labcache.aside import CacheAside
from labcache.bench.core import Ctx, Result, Row, median, pct, percentile, set_ratios
from labcache.bench.peers import Peers
from labcache.bench.versus import make_peer
from labcache.lab.data import InsuranceDB
from labcache.multilevel import Memory, MultiLevelCache, Staleness, Stampede

S6, S7 = "6 stampede", "7 Zipf workload"
N_KEYS = 1000  # policies and customers the Zipf workload draws from (and the 80 quotes)

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
    labcache(
        "labcache, no protection (single_flight=False)", stampede=Stampede(single_flight=False)
    )

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
        ("MultiLevelCache", MultiLevelCache(
                                            redis,
                                            namespace=ctx.ns("s7m"),
                                            default_ttl=ttl,
                                            l1=Memory(ttl=ttl / 2),
        )),
    ]  # fmt: skip
    options: list[tuple[str, dict[str, Any]]] = [
        ("XFetch early_refresh=1", {"stampede": Stampede(early_refresh=1.0)}),
        ("SWR grace=ttl", {"staleness": Staleness(grace=ttl)}),
    ]
    for label, option in options:
        cache = MultiLevelCache(
            redis, **option, namespace=ctx.ns(f"s7{len(made)}"), default_ttl=ttl,
            l1=Memory(ttl=ttl / 2),
        )  # fmt: skip
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
