"""Part 2's TTL widget: replay reads of one policy at a steady pace and plot hits and misses."""

from __future__ import annotations

import asyncio
import statistics
import time
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis

from labcache.aside import CacheAside
from labcache.lab.data import InsuranceDB, Latency
from labcache.lab.display import COLORS, knob, live, style


@dataclass
class Replay:
    """What one replay saw: per kind (miss, hit) the read times (s) and latencies (ms)."""

    ttl: float
    db_ms: int
    points: dict[str, tuple[list[float], list[float]]] = field(
        default_factory=lambda: {"miss": ([], []), "hit": ([], [])}
    )
    hit_rate: float = 0.0
    db_calls: int = 0

    @property
    def mean_ms(self) -> float:
        """The mean latency of all reads (ms)."""
        return statistics.mean(self.points["miss"][1] + self.points["hit"][1])

    def title(self) -> str:
        """The figure's title: the settings and what they gave."""
        return (
            f"TTL {self.ttl:.1f} s, database {self.db_ms} ms: {self.hit_rate:.0%} hits, "
            f"mean {self.mean_ms:.1f} ms per read, {self.db_calls} database calls"
        )


async def replay(
    redis: aioredis.Redis,
    namespace: str,
    ttl: float,
    db_ms: int,
    reads: int = 30,
    every: float = 0.1,
) -> Replay:
    """Read policy 12345 through a fresh CacheAside `reads` times, one every `every` seconds.

    The database is a new `InsuranceDB` whose policy reads take `db_ms`; the entry is deleted
    first and kept `ttl` seconds, so the TTL alone decides which reads miss.
    """
    source = InsuranceDB(latency=Latency(policy=db_ms / 1000))
    cache = CacheAside(redis, namespace=namespace)
    result = Replay(ttl, db_ms)
    try:
        await cache.invalidate("policy:12345")
        begin = time.perf_counter()
        for i in range(reads):
            await asyncio.sleep(max(0.0, begin + i * every - time.perf_counter()))
            misses, start = cache.stats.misses, time.perf_counter()
            await cache.get("policy:12345", lambda: source.get_policy("12345"), ttl=ttl)
            kind = "miss" if cache.stats.misses > misses else "hit"
            result.points[kind][0].append(start - begin)
            result.points[kind][1].append((time.perf_counter() - start) * 1000)
        result.hit_rate = cache.stats.hit_rate
        result.db_calls = source.calls["get_policy"]
    finally:
        await cache.invalidate("policy:12345")
        source.close()
    return result


async def ttl_replay_widget(redis: aioredis.Redis, namespace: str) -> Any:
    """Sliders for the TTL and the database's latency over a figure of one replay's reads.

    It runs one replay with the sliders' start values, then again whenever a slider moves.
    """
    import plotly.graph_objects as go

    ttl_s = knob("TTL (s)", 1.0, 0.2, 4.0, 0.2, readout_format=".1f")
    db_ms = knob("DB latency (ms)", 100, 10, 500, 10)
    fig = go.FigureWidget()
    fig.add_scatter(name="miss: from the database", mode="markers", marker_color=COLORS["miss"])
    fig.add_scatter(name="hit: from Redis", mode="markers", marker_color=COLORS["hit"])
    style(fig, "", "time since the first read (s)", "latency of the read (ms, log scale)")
    fig.update_yaxes(type="log")

    async def redraw() -> None:
        seen = await replay(redis, namespace, ttl_s.value, db_ms.value)
        with fig.batch_update():
            for trace, kind in zip(fig.data, ("miss", "hit"), strict=True):
                trace.x, trace.y = seen.points[kind]
            fig.layout.title = seen.title()

    return await live([ttl_s, db_ms], fig, rerun=redraw)
