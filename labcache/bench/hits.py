"""Scenarios 1, 2, 3 and 8: the per-request paths (L1 hit, L2 hit, miss), against their
physical floors and against the peer libraries' same paths."""

from __future__ import annotations

import itertools
import json
from collections.abc import Awaitable, Callable
from typing import Any, cast

from cachetools import TTLCache

from labcache.aside import CacheAside
from labcache.bench.core import (
    Contender,
    Ctx,
    Result,
    Row,
    calls_only,
    command_counts,
    commands_since,
    fmt_delta,
    fmt_time,
    interleave,
    set_ratios,
    timed_row,
)
from labcache.multilevel import Guard, MultiLevelCache

S1, S2, S3 = "1 L1 hit", "2 L2 hit", "3 miss + load + set"
KEY = "policy:10000"


def const_loader(value: Any) -> Callable[[], Awaitable[Any]]:
    async def loader() -> Any:
        return value

    return loader


async def timed_group(
    ctx: Ctx, res: Result, scenario: str, contenders: list[Contender], *, per_op: bool
) -> list[Row]:
    """Interleave the contenders; single timed calls (`per_op`) or batches of `l1_batch`."""
    plan = ctx.plan
    if per_op:
        samples = await interleave(contenders, rounds=plan.rounds, blocks=plan.l2_ops, batch=1)
    else:
        samples = await interleave(
            contenders, rounds=plan.rounds, blocks=plan.l1_batches, batch=plan.l1_batch
        )
    rows = [timed_row(scenario, c.name, samples[c.name], reference=c.reference) for c in contenders]
    res.rows.extend(rows)
    return rows


def hit_is(res: Result, scenario: str, name: str, got: Any, want: Any) -> bool:
    """Every contender must really hit (return the stored value) before it is timed."""
    ok = bool(got == want)
    res.check(scenario, f"{name} returns the stored value", ok, "" if ok else f"got {got!r:.80}")
    return ok


async def _no_commands_on_l1_hits(
    ctx: Ctx, res: Result, cache: MultiLevelCache, label: str, loader: Any
) -> None:
    n = ctx.plan.l1_batch * ctx.plan.l1_batches
    hits = cache.stats.l1_hits
    before = await command_counts(ctx.redis)
    for _ in range(n):
        await cache.get(KEY, loader)
    seen = calls_only(await commands_since(ctx.redis, before))
    served = cache.stats.l1_hits - hits
    res.check(
        S1,
        f"0 Redis commands on an L1 hit ({label})",
        not seen and served == n,
        f"{n} gets, {served} served by L1; commands the server saw: {seen or 'none'}",
    )


async def l1_hit(ctx: Ctx) -> Result:
    """MultiLevelCache.get served from L1 vs the asyncio floor (async def + TTLCache) and a dict."""
    res = Result()
    value = ctx.policies[0]
    loader = const_loader(value)
    plain = MultiLevelCache(ctx.redis, namespace=ctx.ns("s1"))
    tracked = MultiLevelCache(ctx.redis, namespace=ctx.ns("s1t"), tracking=True)
    try:
        for cache in (plain, tracked):
            await cache.start()
            await cache.set(KEY, value)
        full = plain.key(KEY)
        ttl_cache: TTLCache[str, Any] = TTLCache(maxsize=1000, ttl=60)
        ttl_cache[full] = value
        plain_dict = {full: value}

        async def floor_get(k: str) -> Any:
            return ttl_cache[k]

        async def floor(n: int) -> None:
            for _ in range(n):
                await floor_get(full)

        async def dict_lookup(n: int) -> None:
            for _ in range(n):
                plain_dict[full]

        async def lc(n: int) -> None:
            get = plain.get
            for _ in range(n):
                await get(KEY, loader)

        async def lc_tracked(n: int) -> None:
            get = tracked.get
            for _ in range(n):
                await get(KEY, loader)

        hit_is(res, S1, "MultiLevelCache.get", await plain.get(KEY, loader), value)
        hit_is(res, S1, "MultiLevelCache.get (tracking)", await tracked.get(KEY, loader), value)
        rows = await timed_group(
            ctx,
            res,
            S1,
            [
                Contender("async def + TTLCache[k] (asyncio floor)", floor, reference=True),
                Contender("plain dict lookup (sync, no await)", dict_lookup),
                Contender("labcache MultiLevelCache.get", lc),
                Contender("labcache MultiLevelCache.get, tracking=True", lc_tracked),
            ],
            per_op=False,
        )
        set_ratios(rows)
        for row in rows[2:]:
            row.target = "≤ 1.60× floor"
            row.met = row.ratio is not None and row.ratio <= 1.6
        off, on = fmt_time(rows[2].median), fmt_time(rows[3].median)
        rows[3].notes = f"tracking off → on: {off} → {on}"
        await _no_commands_on_l1_hits(ctx, res, plain, "tracking off", loader)
        await _no_commands_on_l1_hits(ctx, res, tracked, "tracking on", loader)
    finally:
        for cache in (plain, tracked):
            await cache.close()
    return res


async def _exactly(
    ctx: Ctx, res: Result, scenario: str, name: str, op: Callable[[], Awaitable[Any]], n: int,
    expected: dict[str, int],
) -> None:  # fmt: skip
    before = await command_counts(ctx.redis)
    for _ in range(n):
        await op()
    seen = calls_only(await commands_since(ctx.redis, before))
    res.check(scenario, name, seen == expected, f"expected {expected}, the server saw {seen}")


async def l2_hit(ctx: Ctx) -> Result:
    """get(skip_memory=True), served from Redis, vs a bare GET + json.loads on the same client."""
    res = Result()
    value = ctx.policies[1]
    loader = const_loader(value)
    lc = MultiLevelCache(ctx.redis, namespace=ctx.ns("s2"))
    aside = CacheAside(ctx.redis, namespace=ctx.ns("s2a"))
    raw_key = ctx.ns("s2raw") + KEY
    redis = ctx.redis
    try:  # the same cache without its per-call failure guards: what they cost on a hit
        bare: MultiLevelCache | None = MultiLevelCache(
            redis,
            namespace=ctx.ns("s2b"),
            guard=Guard(op_timeout=None, breaker=False),
        )
    except TypeError:  # a MultiLevelCache without those options
        bare = None
    try:
        await lc.start()
        await lc.set(KEY, value)
        await aside.set(KEY, value)
        await redis.set(raw_key, json.dumps(value), ex=3600)

        async def floor(n: int) -> None:
            for _ in range(n):
                json.loads(cast(bytes, await redis.get(raw_key)))

        async def lc_get(n: int) -> None:
            for _ in range(n):
                await lc.get(KEY, loader, skip_memory=True)

        async def aside_get(n: int) -> None:
            for _ in range(n):
                await aside.get(KEY, loader)

        got = await lc.get(KEY, loader, skip_memory=True)
        hit_is(res, S2, "get(skip_memory=True)", got, value)
        hit_is(res, S2, "CacheAside.get", await aside.get(KEY, loader), value)
        contenders = [
            Contender("bare await GET + json.loads (floor)", floor, reference=True),
            Contender("labcache MultiLevelCache.get(skip_memory=True)", lc_get),
            Contender("labcache CacheAside.get", aside_get),
        ]
        if bare is not None:
            unguarded = bare
            await unguarded.set(KEY, value)

            async def bare_get(n: int) -> None:
                for _ in range(n):
                    await unguarded.get(KEY, loader, skip_memory=True)

            contenders.append(
                Contender(
                    "labcache get(skip_memory=True), op_timeout=None, breaker=False", bare_get
                )
            )
        rows = await timed_group(ctx, res, S2, contenders, per_op=True)
        set_ratios(rows)
        for row in rows[1:3]:
            row.target = "≤ 1.10× floor"
            row.met = row.ratio is not None and row.ratio <= 1.10
        for row in rows[1:]:
            if row.median is not None and rows[0].median is not None:
                row.notes = f"{fmt_delta(row.median - rows[0].median)} per hit over the floor"
        n = ctx.plan.l2_ops
        await _exactly(ctx, res, S2, "an L2 hit is exactly one GET",
                       lambda: lc.get(KEY, loader, skip_memory=True), n, {"get": n})  # fmt: skip
        await _exactly(ctx, res, S2, "a CacheAside hit is exactly one GET",
                       lambda: aside.get(KEY, loader), n, {"get": n})  # fmt: skip
    finally:
        await lc.close()
        if bare is not None:
            await bare.close()
    return res


async def miss(ctx: Ctx) -> Result:
    """A miss whose loader answers at once: what labcache adds to the loader and one SET."""
    res = Result()
    value = ctx.policies[2]
    redis = ctx.redis
    calls = itertools.count()
    loads = 0

    async def loader() -> Any:
        nonlocal loads
        loads += 1
        return value

    lc = MultiLevelCache(redis, namespace=ctx.ns("s3"))
    aside = CacheAside(redis, namespace=ctx.ns("s3a"))
    raw = ctx.ns("s3raw")
    try:
        await lc.start()

        async def work(n: int) -> None:
            for _ in range(n):
                v = await loader()
                await redis.set(f"{raw}set:{next(calls)}", json.dumps(v), px=300_000)

        async def aside_floor(n: int) -> None:
            for _ in range(n):
                k = f"{raw}gls:{next(calls)}"
                if await redis.get(k) is None:
                    await redis.set(k, json.dumps(await loader()), px=300_000)

        async def lc_miss(n: int) -> None:
            for _ in range(n):
                await lc.get(f"m:{next(calls)}", loader)

        async def aside_miss(n: int) -> None:
            for _ in range(n):
                await aside.get(f"m:{next(calls)}", loader)

        rows = await timed_group(
            ctx,
            res,
            S3,
            [
                Contender("loader + one SET (the work itself)", work, reference=True),
                Contender("GET (miss) + loader + SET (cache-aside floor)", aside_floor),
                Contender("labcache MultiLevelCache.get, miss", lc_miss),
                Contender("labcache CacheAside.get, miss", aside_miss),
            ],
            per_op=True,
        )
        set_ratios(rows)
        for row in rows[1:]:
            if row.median is not None and rows[0].median is not None:
                row.notes = f"{fmt_delta(row.median - rows[0].median)} per miss over loader + SET"
        n = ctx.plan.l2_ops
        loads_before = loads
        await _exactly(ctx, res, S3, "a MultiLevelCache miss is one GET and one SET",
                       lambda: lc.get(f"m:{next(calls)}", loader), n,
                       {"get": n, "set": n})  # fmt: skip
        res.check(S3, "a miss calls the loader once", loads - loads_before == n,
                  f"{n} misses, {loads - loads_before} loader calls")  # fmt: skip
    finally:
        await lc.close()
        await ctx.clean(raw)
        await ctx.clean(lc.namespace)
        await ctx.clean(aside.namespace)
    return res
