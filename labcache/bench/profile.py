"""`--profile PATH`: where labcache's time goes on one path (pyinstrument, else cProfile).

The paths are the ones whose targets the benchmark checks: an L1 hit, an L2 hit, a miss,
and a warm of many keys. Each runs long enough for a statistical profiler to see it.
"""

from __future__ import annotations

import cProfile
import io
import itertools
import pstats
from collections.abc import Awaitable, Callable
from typing import Any

from labcache.bench.core import Ctx
from labcache.bench.hits import KEY, const_loader
from labcache.multilevel import MultiLevelCache

PATHS = ("l1", "l2", "miss", "warm")


async def _workload(ctx: Ctx, path: str, cache: MultiLevelCache) -> Callable[[], Awaitable[Any]]:
    value = ctx.policies[0]
    loader = const_loader(value)
    await cache.set(KEY, value)
    counter = itertools.count()
    if path == "l1":

        async def run() -> None:
            for _ in range(200_000):
                await cache.get(KEY, loader)

    elif path == "l2":

        async def run() -> None:
            for _ in range(5_000):
                await cache.get(KEY, loader, skip_memory=True)

    elif path == "miss":

        async def run() -> None:
            for _ in range(3_000):
                await cache.get(f"m:{next(counter)}", loader)

    else:
        from labcache.warming import CacheWarmer

        async def run() -> None:
            jobs = {f"w:{i}": loader for i in range(10_000)}
            await CacheWarmer(cache, progress=False).warm(jobs)

    return run


async def profile(ctx: Ctx, path: str) -> str:
    """Run one path under a profiler; return the profiler's text report."""
    if path not in PATHS:
        raise ValueError(f"--profile takes one of {PATHS}, not {path!r}")
    cache = MultiLevelCache(ctx.redis, namespace=ctx.ns(f"profile-{path}"))
    await cache.start()
    try:
        run = await _workload(ctx, path, cache)
        await run()  # warm up: connections, caches, code paths
        try:
            from pyinstrument import Profiler
        except ImportError:
            profiler = cProfile.Profile()
            profiler.enable()
            await run()
            profiler.disable()
            out = io.StringIO()
            pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(30)
            return out.getvalue()
        sampler = Profiler(interval=0.0002, async_mode="enabled")
        sampler.start()
        await run()
        sampler.stop()
        return str(sampler.output_text(unicode=True, color=False, show_all=False))
    finally:
        await cache.close()
        await ctx.clean(cache.namespace)
