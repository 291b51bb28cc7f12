"""Scenario 8: the peer libraries on the same hit paths as labcache (L1 and L2 hits)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, cast

from labcache.bench.core import Contender, Ctx, Result, Row, set_ratios
from labcache.bench.hits import KEY, const_loader, hit_is, timed_group
from labcache.bench.peers import NotAvailable, Peers
from labcache.multilevel import MultiLevelCache

S8A, S8B = "8a peers: L1 hit", "8b peers: L2 hit"
P = TypeVar("P")


def _expect(got: Any, want: Any) -> None:
    """A peer must really hit before it is timed (else its row is an error, not a number)."""
    if got != want:
        raise RuntimeError(f"expected a hit with the stored value, got {got!r:.60}")


async def make_peer(
    res: Result, scenario: str, name: str, make: Callable[[], Awaitable[P]]
) -> P | None:
    """Set one peer up; a missing library or unsupported server becomes a 'skipped' row."""
    try:
        return await make()
    except NotAvailable as exc:
        res.skipped(scenario, name, str(exc))
    except Exception as exc:  # a peer's failure is reported, not fatal
        res.rows.append(
            Row(scenario, name, status="error", notes=f"{type(exc).__name__}: {exc}"[:200])
        )
    return None


def _peers_target(rows: list[Row]) -> None:
    """labcache (the reference row) must be at least as fast as every peer."""
    ref = next(r for r in rows if r.reference)
    peers = [r for r in rows if not r.reference and r.status == "ok" and "floor" not in r.contender]
    faster = [r.contender for r in peers if r.median is not None and ref.median is not None
              and r.median < ref.median]  # fmt: skip
    ref.target = "≤ every peer"
    ref.met = not faster
    if faster:
        ref.notes = "faster: " + ", ".join(faster)


async def peers_l1(ctx: Ctx) -> Result:
    res = Result()
    value = ctx.policies[3]
    loader = const_loader(value)
    peers = Peers(ctx.url)
    lc = MultiLevelCache(ctx.redis, namespace=ctx.ns("s8a"))
    contenders: list[Contender] = []
    try:
        await lc.start()
        await lc.set(KEY, value)
        hit_is(res, S8A, "labcache", await lc.get(KEY, loader), value)

        async def lc_get(n: int) -> None:
            get = lc.get
            for _ in range(n):
                await get(KEY, loader)

        contenders.append(Contender("labcache MultiLevelCache.get", lc_get, reference=True))

        async def cashews_mem() -> Contender:
            cache = await peers.cashews("mem")
            await cache.set(KEY, value, expire=300)
            _expect(await cache.get(KEY), value)

            async def run(n: int) -> None:
                for _ in range(n):
                    await cache.get(KEY)

            return Contender("cashews mem:// get", run)

        async def cashews_cs() -> Contender:
            prefix = ctx.ns("s8cs")
            cache = await peers.cashews("client_side", client_side_prefix=prefix)
            key = prefix + KEY
            await cache.set(key, value, expire=300)
            await cache.get(key)  # the first read fills its local copy
            _expect(await cache.get(key), value)

            async def run(n: int) -> None:
                for _ in range(n):
                    await cache.get(key)

            return Contender("cashews redis client_side=true get (tracked L1)", run)

        async def aiocache_mem() -> Contender:
            cache = await peers.aiocache("memory")
            await cache.set(KEY, value, ttl=300)
            _expect(await cache.get(KEY), value)

            async def run(n: int) -> None:
                for _ in range(n):
                    await cache.get(KEY)

            return Contender("aiocache SimpleMemoryCache get", run)

        async def dogpile_mem() -> Contender:
            region = peers.dogpile("memory")
            region.get_or_create(KEY, lambda: value)
            _expect(region.get_or_create(KEY, lambda: None), value)

            async def run(n: int) -> None:
                goc = region.get_or_create
                for _ in range(n):
                    goc(KEY, dict)

            return Contender("dogpile.cache memory get_or_create (sync)", run)

        async def redis_py_csc() -> Contender:
            client = peers.redis_py_csc(ctx.server_version)
            key = ctx.ns("s8csc") + KEY
            client.set(key, json.dumps(value), ex=300)
            client.get(key)

            async def run(n: int) -> None:
                for _ in range(n):
                    json.loads(client.get(key))

            return Contender("redis-py CacheConfig (RESP3 client-side cache)", run)

        for name, make in (
            ("cashews mem:// get", cashews_mem),
            ("cashews redis client_side=true get (tracked L1)", cashews_cs),
            ("aiocache SimpleMemoryCache get", aiocache_mem),
            ("dogpile.cache memory get_or_create (sync)", dogpile_mem),
            ("redis-py CacheConfig (RESP3 client-side cache)", redis_py_csc),
        ):
            made = await make_peer(res, S8A, name, make)
            if made is not None:
                contenders.append(made)
        skipped = [r for r in res.rows]
        res.rows = []
        rows = await timed_group(ctx, res, S8A, contenders, per_op=False)
        res.rows.extend(skipped)
        set_ratios(rows)
        _peers_target(rows)
    finally:
        await peers.close()
        await lc.close()
    return res


async def peers_l2(ctx: Ctx) -> Result:
    res = Result()
    value = ctx.policies[4]
    loader = const_loader(value)
    peers = Peers(ctx.url)
    redis = ctx.redis
    lc = MultiLevelCache(redis, namespace=ctx.ns("s8b"))
    raw_key = ctx.ns("s8braw") + KEY
    contenders: list[Contender] = []
    try:
        await lc.start()
        await lc.set(KEY, value)
        await redis.set(raw_key, json.dumps(value), ex=3600)
        hit_is(res, S8B, "labcache", await lc.get(KEY, loader, skip_memory=True), value)

        async def lc_get(n: int) -> None:
            for _ in range(n):
                await lc.get(KEY, loader, skip_memory=True)

        async def floor(n: int) -> None:
            for _ in range(n):
                json.loads(cast(bytes, await redis.get(raw_key)))

        contenders += [
            Contender("labcache MultiLevelCache.get(skip_memory=True)", lc_get, reference=True),
            Contender("bare await GET + json.loads (floor)", floor),
        ]

        async def cashews_redis() -> Contender:
            cache = await peers.cashews("redis")
            key = ctx.ns("s8cashews") + KEY
            await cache.set(key, value, expire=300)
            _expect(await cache.get(key), value)

            async def run(n: int) -> None:
                for _ in range(n):
                    await cache.get(key)

            return Contender("cashews redis:// get (JSON)", run)

        async def aiocache_redis() -> Contender:
            cache = await peers.aiocache_redis(ctx.ns("s8aiocache"))
            await cache.set(KEY, value, ttl=300)
            _expect(await cache.get(KEY), value)

            async def run(n: int) -> None:
                for _ in range(n):
                    await cache.get(KEY)

            return Contender("aiocache RedisCache get (JsonSerializer)", run)

        async def dogpile_redis() -> Contender:
            region = peers.dogpile("redis")
            key = ctx.ns("s8dogpile") + KEY
            region.get_or_create(key, lambda: value)
            _expect(region.get_or_create(key, lambda: None), value)

            async def run(n: int) -> None:
                goc = region.get_or_create
                for _ in range(n):
                    goc(key, dict)

            async def threaded(n: int) -> None:
                for _ in range(n):
                    await asyncio.to_thread(region.get_or_create, key, dict)

            threaded_contender.append(
                Contender("dogpile.cache redis via asyncio.to_thread (JSON)", threaded)
            )
            return Contender("dogpile.cache redis get_or_create (sync, JSON)", run)

        async def sync_floor() -> Contender:
            import redis as sync_redis

            client = sync_redis.Redis.from_url(ctx.url)
            peers._closers.append(lambda: asyncio.to_thread(client.close))

            async def run(n: int) -> None:
                for _ in range(n):
                    json.loads(cast(bytes, client.get(raw_key)))

            return Contender("bare sync redis-py GET + json.loads (sync floor)", run)

        threaded_contender: list[Contender] = []
        for name, make in (
            ("bare sync redis-py GET + json.loads (sync floor)", sync_floor),
            ("cashews redis:// get (JSON)", cashews_redis),
            ("aiocache RedisCache get (JsonSerializer)", aiocache_redis),
            ("dogpile.cache redis get_or_create (sync, JSON)", dogpile_redis),
        ):
            made = await make_peer(res, S8B, name, make)
            if made is not None:
                contenders.append(made)
        contenders += threaded_contender
        skipped = list(res.rows)
        res.rows = []
        rows = await timed_group(ctx, res, S8B, contenders, per_op=True)
        res.rows.extend(skipped)
        set_ratios(rows)
        _peers_target(rows)
    finally:
        await peers.close()
        await lc.close()
    return res
