"""Scenarios 4 and 5: many keys at once (warming; invalidating 1,000 keys among 200,000)."""

from __future__ import annotations

import asyncio
import gc
import math
from collections.abc import Awaitable, Callable
from typing import Any

from labcache.bench.core import (
    Ctx,
    Result,
    Row,
    command_counts,
    commands_since,
    fmt_time,
    median,
    percentile,
    set_ratios,
)
from labcache.bench.hits import const_loader
from labcache.bench.probe import PingProbe
from labcache.keys import glob_escape
from labcache.multilevel import MultiLevelCache

S4, S5 = "4 warming", "5 pattern invalidation"


async def _present(ctx: Ctx, fulls: list[str]) -> int:
    found = 0
    for i in range(0, len(fulls), 1000):
        found += int(await ctx.redis.exists(*fulls[i : i + 1000]))
    return found


async def warming(ctx: Ctx) -> Result:
    """CacheWarmer vs one `await cache.get` per key (and the lab's gather of gets)."""
    from labcache.warming import CacheWarmer

    res = Result()
    n, rounds = ctx.plan.warm_keys, ctx.plan.warm_rounds
    values = ctx.policies
    keys = [f"policy:{i}" for i in range(n)]

    def jobs() -> dict[str, Callable[[], Awaitable[Any]]]:
        return {k: const_loader(values[i % len(values)]) for i, k in enumerate(keys)}

    async def serial(cache: MultiLevelCache) -> str:
        for key, loader in jobs().items():
            await cache.get(key, loader)
        return ""

    async def lab_gather(cache: MultiLevelCache) -> str:
        await asyncio.gather(*(cache.get(k, loader) for k, loader in jobs().items()))
        return ""

    warms: list[Any] = []

    async def warmer(cache: MultiLevelCache) -> str:
        result = await CacheWarmer(cache, progress=False).warm(jobs())
        warms.append(result)
        return f"{result.round_trips} round trips"

    contenders: list[tuple[str, Callable[[MultiLevelCache], Awaitable[str]]]] = [
        ("one await cache.get per key", serial),
        ("the lab's way: gather(cache.get per key)", lab_gather),
        ("labcache CacheWarmer.warm", warmer),
    ]
    times: dict[str, list[float]] = {name: [] for name, _ in contenders}
    present: dict[str, list[int]] = {name: [] for name, _ in contenders}
    notes: dict[str, str] = {}
    for r in range(rounds):
        for i in range(len(contenders)):
            name, fn = contenders[(r + i) % len(contenders)]
            cache = MultiLevelCache(ctx.redis, namespace=ctx.ns(f"s4-{r}-{i}"))
            await cache.start()
            gc.collect()  # the garbage of the previous contender is not charged to this one
            try:
                t0 = asyncio.get_running_loop().time()
                notes[name] = await fn(cache)
                times[name].append(asyncio.get_running_loop().time() - t0)
                present[name].append(await _present(ctx, [cache.key(k) for k in keys]))
            finally:
                await cache.close()
                await ctx.clean(cache.namespace)
    for name in (contenders[0][0], contenders[2][0]):  # the lab's burst is reported, not checked
        ok = all(p == n for p in present[name])
        res.check(S4, f"{name}: every key is in Redis afterwards", ok,
                  f"{present[name]} of {n} per round")  # fmt: skip
    batches = math.ceil(n / CacheWarmer(MultiLevelCache(ctx.redis)).batch_size)
    ok = all(w.warmed == n and not w.failed for w in warms)
    res.check(S4, "the warmer wrote every key, none failed", ok, "; ".join(map(str, warms)))
    res.check(S4, "the warmer costs at most 3 round trips per batch",
              all(w.round_trips <= 3 * batches for w in warms),
              f"{[w.round_trips for w in warms]} round trips for {batches} batches")  # fmt: skip
    rows = []
    for name, _ in contenders:
        per_key = [t / n for t in times[name]]
        m = median(per_key)
        rows.append(Row(S4, f"{name} ({n:,} keys)", median=m, p99=percentile(per_key, 99),
                        ops_per_s=1 / m, samples=len(per_key), reference=name == contenders[0][0],
                        extra={"total_s": median(times[name])}))  # fmt: skip
    set_ratios(rows)
    for row, (name, _) in zip(rows, contenders, strict=True):
        total = fmt_time(median(times[name]))
        speedup = 1 / row.ratio if row.ratio else math.nan
        row.notes = f"{total} for all keys; {speedup:.1f}× the serial speed"
        if notes.get(name):
            row.notes += f"; {notes[name]}"
        if any(p != n for p in present[name]):
            row.notes += f"; keys cached afterwards {present[name]} of {n} per round"
    rows[2].target = "≥ 20× faster than serial"
    rows[2].met = rows[2].ratio is not None and rows[2].ratio <= 1 / 20
    res.rows += rows
    return res


# -- pattern invalidation --------------------------------------------------------------------


async def _populate(ctx: Ctx, prefix: str, count: int) -> str:
    """`count` filler keys `<prefix>:<n>`: DEBUG POPULATE if allowed, else pipelined SETs."""
    try:
        await ctx.redis.execute_command("DEBUG", "POPULATE", count, prefix, 64)  # type: ignore[no-untyped-call]
        return "DEBUG POPULATE"
    except Exception:  # DEBUG is disabled on most servers (enable-debug-command no)
        pass
    filler = b"x" * 64
    for start in range(0, count, 5000):
        async with ctx.redis.pipeline(transaction=False) as pipe:
            for j in range(start, min(count, start + 5000)):
                pipe.set(f"{prefix}:{j}", filler)
            await pipe.execute()
    return "pipelined SETs"


async def _set_many(
    ctx: Ctx, cache: MultiLevelCache, keys: list[str], value: Any, tag: str | None = None
) -> None:
    """The records `cache.set` writes (and, with `tag`, its tag set), in one pipeline."""
    async with ctx.redis.pipeline(transaction=False) as pipe:
        for key in keys:
            record = cache.store.record(cache.key(key), value, 3600)
            pipe.set(record.full, record.data, px=record.px)
            if tag is not None:
                pipe.sadd(tag, record.full)
        if tag is not None:
            pipe.pexpire(tag, 3_600_000)
        await pipe.execute()


async def invalidation(ctx: Ctx) -> Result:
    """KEYS+DEL vs SCAN vs tags vs a generation bump, with a PING loop in another process."""
    from labcache.generations import Generation

    res = Result()
    plan, redis = ctx.plan, ctx.redis
    targets = plan.inv_targets
    filler = ctx.prefix + "s5bg"
    how = await _populate(ctx, filler, plan.inv_total - targets)
    cache = MultiLevelCache(redis, namespace=ctx.ns("s5"))
    ns = glob_escape(cache.namespace)
    gen = Generation(cache, "gen")
    value = ctx.policies[0]

    async def keys_del(r: int) -> tuple[Callable[[], Awaitable[int]], str]:
        names = [f"keys:r{r}:{i}" for i in range(targets)]
        await _set_many(ctx, cache, names, value)

        async def op() -> int:
            # The lab's way, measured on purpose as the reference row: never used by labcache.
            found = await redis.keys(f"{ns}keys:r{r}:*")
            return int(await redis.delete(*found)) if found else 0

        return op, "keys"

    async def scan(r: int) -> tuple[Callable[[], Awaitable[int]], str]:
        await _set_many(ctx, cache, [f"scan:r{r}:{i}" for i in range(targets)], value)
        return (lambda: cache.invalidate_pattern(f"scan:r{r}:*")), "scan"

    async def tags(r: int) -> tuple[Callable[[], Awaitable[int]], str]:
        names = [f"tag:r{r}:{i}" for i in range(targets)]
        await _set_many(ctx, cache, names, value, tag=cache.tag_key(f"r{r}"))

        async def op() -> int:
            return len(await cache.invalidate_tag(f"r{r}"))

        return op, "tags"

    async def bump(r: int) -> tuple[Callable[[], Awaitable[int]], str]:
        await _set_many(ctx, cache, [await gen.key(f"r{r}:{i}") for i in range(targets)], value)
        before = await gen.current()

        async def op() -> int:
            after = await gen.bump()
            return targets if after == before + 1 else 0

        return op, "gen"

    methods: list[tuple[str, Callable[[int], Awaitable[tuple[Any, str]]]]] = [
        ("KEYS + DEL (the lab's way)", keys_del),
        ("labcache invalidate_pattern (SCAN + UNLINK)", scan),
        ("labcache invalidate_tag (tag set)", tags),
        ("labcache Generation.bump (one INCR)", bump),
    ]
    times: dict[str, list[float]] = {m: [] for m, _ in methods}
    pings: dict[str, list[float]] = {m: [] for m, _ in [*methods, ("idle", keys_del)]}
    server: dict[str, list[float]] = {m: [] for m, _ in methods}
    longest: dict[str, list[float]] = {m: [] for m, _ in methods}
    removals: dict[str, list[int]] = {"keys": [], "scan": [], "tags": [], "gen": []}
    await cache.start()
    probe = PingProbe(ctx.url).start()
    try:
        for r in range(plan.inv_rounds):
            for i in range(len(methods)):
                name, prepare = methods[(r + i) % len(methods)]
                op, tag = await prepare(r)
                before = await command_counts(redis)
                probe.mark()
                t0 = asyncio.get_running_loop().time()
                removed = await op()
                elapsed = asyncio.get_running_loop().time() - t0
                worst, _count = probe.mark()
                seen = await commands_since(redis, before)
                times[name].append(elapsed)
                pings[name].append(worst)
                server[name].append(sum(usec for _, usec in seen.values()) / 1e6)
                # The server runs one command at a time: its longest command is the stall.
                longest[name].append(max(usec / calls for calls, usec in seen.values()) / 1e6)
                removals[tag].append(removed)
            probe.mark()
            await asyncio.sleep(max(0.02, median(times[methods[1][0]])))
            pings["idle"].append(probe.mark()[0])
            await ctx.clean(cache.namespace + "gen:")  # the old generations age out by TTL
        for tag, removed in removals.items():
            res.check(S5, f"{tag}: each round removed exactly the {targets} target keys",
                      all(x == targets for x in removed), f"removed {removed}")  # fmt: skip
        loads = 0

        async def count_load() -> Any:
            nonlocal loads
            loads += 1
            return value

        await gen.get(f"r{plan.inv_rounds - 1}:0", count_load)  # written before the last bump
        res.check(S5, "after a bump, a read of the family misses (loads again)", loads == 1,
                  f"{loads} load(s)")  # fmt: skip
        left = 0
        async for _ in redis.scan_iter(match=glob_escape(filler) + ":*", count=5000):
            left += 1
        res.check(S5, "the other keys are untouched", left == plan.inv_total - targets,
                  f"{left} of {plan.inv_total - targets} filler keys remain ({how})")  # fmt: skip
    finally:
        probe.stop()
        await cache.close()
        await ctx.clean(filler + ":")
        await ctx.clean(cache.namespace)
    rows = []
    idle = median(pings["idle"])
    for name, _ in methods:
        m = median(times[name])
        rows.append(Row(S5, f"{name}: {targets:,} of {plan.inv_total:,} keys", median=m,
                        p99=percentile(times[name], 99), ops_per_s=1 / m if m else None,
                        samples=len(times[name]), reference=name == methods[0][0],
                        extra={"worst_ping_s": pings[name], "server_s": server[name],
                               "idle_worst_ping_s": pings["idle"],
                               "longest_command_s": longest[name]}))  # fmt: skip
        rows[-1].notes = (
            f"server stall (longest command) {fmt_time(median(longest[name]))} (max "
            f"{fmt_time(max(longest[name]))}); worst "
            f"concurrent PING {fmt_time(median(pings[name]))} (max {fmt_time(max(pings[name]))}"
            f"; idle {fmt_time(idle)}); server time {fmt_time(median(server[name]))}"
        )
    set_ratios(rows)
    for row in rows[1:]:
        # Judged on the server's own stall: on a shared 2-core machine even idle PINGs reach
        # several ms (the idle figure beside it), which would judge the machine, not the method.
        row.target = "stall < 3 ms"
        row.met = median(row.extra["longest_command_s"]) < 0.003
    rows[3].notes += f"; the old generation's {targets:,} entries expire by TTL"
    res.rows += rows
    return res
