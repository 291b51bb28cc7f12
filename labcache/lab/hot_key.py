"""One hot key under a steady request rate, in real time: notebook 06's expiry workload.

`steady` sends requests for one key at a fixed rate (an open loop: a request does not wait for
the previous one) through a new `MultiLevelCache`, and returns every event the cache emitted
as a DataFrame, so a notebook can see who waited at each expiry. `timeline_figure` and
`draw_timeline` draw such a run: each request's latency on a log axis (real values, no floor)
above a separate panel of the database loads, placed at the instant each load started.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pandas as pd
import plotly.graph_objects as go
import redis.asyncio as aioredis
from plotly.subplots import make_subplots

from labcache.lab.data import InsuranceDB
from labcache.lab.display import COLORS, style
from labcache.multilevel import MultiLevelCache

# How a request was answered (event kind and level), its legend label and colour.
SERVED = {
    "hit l1": ("L1 hit", COLORS["l1"]),
    "hit l2": ("L2 hit", COLORS["l2"]),
    "stale l2": ("stale", COLORS["stale"]),
    "miss source": ("waited for the database", COLORS["miss"]),
}


async def steady(
    client: aioredis.Redis,
    database: InsuranceDB,
    options: dict[str, Any],
    *,
    namespace: str,
    rate: float = 200,
    seconds: float = 3.5,
    ttl: float = 1.0,
    key: str = "policy:10001",
) -> pd.DataFrame:
    """Requests at `rate`/s for `seconds` on a cache built with `options`; one row per event.

    Columns: `kind`, `level`, `ms` (the event's duration), `detail`, `t` (seconds from the
    first request to the event's end) and `start` (seconds from the first request to the
    event's start: a request's arrival, a load's start). The cache is closed and its keys
    removed before it returns.
    """
    cache = MultiLevelCache(client, namespace=namespace, backplane=False, **options)
    await cache.invalidate_pattern("*")
    rows: list[tuple[float, str, str, float, str]] = []
    cache.events.subscribe(
        lambda e: rows.append((e.at, e.kind, e.level, e.duration * 1000, e.detail))
    )

    async def load() -> Any:
        return await database.get_policy(key.removeprefix("policy:"))

    try:
        await cache.get(key, load, ttl=ttl)  # warm
        begin = time.perf_counter()
        tasks = []
        for i in range(int(rate * seconds)):
            delay = begin + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(cache.get(key, load, ttl=ttl)))
        await asyncio.gather(*tasks)
        await cache.loads.refreshes.join()
    finally:
        await cache.close()
        await cache.invalidate_pattern("*")
    df = pd.DataFrame(rows, columns=["at", "kind", "level", "ms", "detail"])
    df = df.assign(t=df["at"] - begin, start=df["at"] - df["ms"] / 1000 - begin)
    return df[df.start >= 0]


def requests_of(df: pd.DataFrame) -> pd.DataFrame:
    """The rows of `df` that answered a request (hit, miss or stale)."""
    return df[df.kind.isin(["hit", "miss", "stale"])]


def timeline_figure() -> go.FigureWidget:
    """An empty two-panel figure: request latency (log ms) above database loads (ms)."""
    grid = make_subplots(
        rows=2, cols=1, shared_xaxes=True, row_heights=[0.7, 0.3], vertical_spacing=0.08
    )
    fig = go.FigureWidget(grid)
    for label, color in SERVED.values():
        fig.add_scatter(
            x=[], y=[], mode="markers", name=label, marker={"color": color, "size": 5}, row=1, col=1
        )
    fig.add_scatter(
        x=[],
        y=[],
        mode="markers",
        name="database load",
        marker={"color": "black", "symbol": "x", "size": 10},
        row=2,
        col=1,
    )
    style(fig, "", "", "", height=520)
    fig.update_xaxes(title_text="time since the first request (s)", row=2, col=1)
    fig.update_yaxes(type="log", title_text="request latency (ms, log)", row=1, col=1)
    fig.update_yaxes(title_text="load (ms)", rangemode="tozero", row=2, col=1)
    return fig


def draw_timeline(fig: go.FigureWidget, df: pd.DataFrame, title: str) -> None:
    """Put a `steady` run into `fig`: requests by arrival and latency, loads by start."""
    requests = requests_of(df).assign(how=lambda d: d.kind + " " + d.level)
    unseen = int((requests.ms <= 0).sum())  # a log axis cannot show 0 ms: say so, never fake it
    requests = requests[requests.ms > 0]
    loads = df[df.kind == "load"]
    with fig.batch_update():
        for trace, how in zip(fig.data, SERVED, strict=False):
            part = requests[requests.how == how]
            trace.x, trace.y = part.start.tolist(), part.ms.tolist()
        fig.data[-1].x, fig.data[-1].y = loads.start.tolist(), loads.ms.tolist()
        fig.layout.title = title + (f" ({unseen} requests at 0 ms not drawn)" if unseen else "")
