"""Notebook 07's measurements of write patterns: what each store holds over time, and the lag.

`read_after_write` samples what the cache and the database hold while a reader reads and one
write lands; `lag_run` drives a write-behind at a steady rate and samples its lag until the
queue is empty (`lag_run_alone` does it on short-lived resources of its own, for a slider);
`timeline_figure`, `timeline_table` and `lag_figure` draw and tabulate the results.
"""

from __future__ import annotations

import asyncio
import functools
import random
import shutil
import tempfile
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from labcache.aside import unlink_matching
from labcache.connection import connect
from labcache.flusher import FlushStats
from labcache.lab.data import InsuranceDB, Latency
from labcache.lab.writes import InsuranceWriteBehind
from labcache.multilevel import MultiLevelCache


async def read_after_write(
    write: Callable[[], Awaitable[Any]],
    read: Callable[[], Awaitable[Any]],
    in_cache: Callable[[], Awaitable[Any]],
    in_database: Callable[[], Any],
    new_value: Any,
    *,
    at: float = 0.01,
    least: float = 0.4,
    most: float = 3.0,
    sample_every: float = 0.002,
    read_every: float = 0.02,
) -> pd.DataFrame:
    """Samples (ms, cache, database) while `read()` runs every `read_every` s and `write()` at `at`.

    Sampling asks the cache first, then the database, every `sample_every` seconds, and stops
    once both hold `new_value` (after at least `least` seconds) or after `most` seconds.
    """
    samples: list[tuple[float, Any, Any]] = []
    begin = time.perf_counter()

    def elapsed() -> float:
        return time.perf_counter() - begin

    def going() -> bool:
        if not samples:
            return True
        settled = elapsed() > least and samples[-1][1:] == (new_value, new_value)
        return not settled and elapsed() < most

    async def sampler() -> None:
        while going():
            samples.append((elapsed() * 1000, await in_cache(), in_database()))
            await asyncio.sleep(sample_every)

    async def reader() -> None:
        while going():
            await read()
            await asyncio.sleep(read_every)

    async def writer() -> None:
        await asyncio.sleep(at)
        await write()

    await asyncio.gather(sampler(), reader(), writer())
    return pd.DataFrame(samples, columns=["ms", "cache", "database"])


def timeline_table(timelines: Mapping[str, pd.DataFrame], new: Mapping[str, Any]) -> pd.DataFrame:
    """Per pattern: when each store first held the new value, and how long they disagreed (ms)."""
    rows = []
    for name, frame in timelines.items():
        first_db = frame.ms[frame.database == new[name]].min()
        first_cache = frame.ms[frame.cache == new[name]].min()
        empty = int(frame.cache.isna().sum()) * 2  # samples are ~2 ms apart
        disagree = round(abs(first_cache - first_db))
        rows.append((name, round(first_db), round(first_cache), disagree, empty))
    columns = [
        "pattern",
        "database new at (ms)",
        "cache new at (ms)",
        "stores disagree for (ms)",
        "cache empty for (~ms)",
    ]
    return pd.DataFrame(rows, columns=columns).set_index("pattern")


def timeline_figure(timelines: Mapping[str, pd.DataFrame]) -> Any:
    """One panel per pattern: the value in Redis (blue) and in the database (red, dashed)."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    from labcache.lab.display import COLORS, style

    fig = make_subplots(
        rows=len(timelines),
        cols=1,
        shared_xaxes=True,
        vertical_spacing=0.08,
        subplot_titles=list(timelines),
    )
    for row, frame in enumerate(timelines.values(), start=1):
        for column, name, line in (
            ("cache", "Redis (cache)", {"color": COLORS["l2"]}),
            ("database", "database (committed)", {"color": COLORS["source"], "dash": "dash"}),
        ):
            trace = go.Scatter(x=frame.ms, y=frame[column], name=name, line_shape="hv", line=line)
            fig.add_trace(trace.update(showlegend=row == 1), row=row, col=1)
        fig.update_yaxes(title_text="premium ($)", row=row, col=1)
    xaxis = "time since the experiment started (ms)"
    title = "Read-after-write: the premium in the cache and in the database"
    style(fig, title, xaxis, "premium ($)", height=240 * len(timelines))
    fig.update_xaxes(title_text=None)
    fig.update_xaxes(title_text=xaxis, row=len(timelines), col=1)
    return fig


async def lag_run(
    cache: MultiLevelCache,
    db: InsuranceDB,
    pool: Sequence[str],
    batch_size: int,
    interval: float,
    *,
    rate: float = 250,
    seconds: float = 1.0,
    seed: int = 7,
    stream: str = "__load__",
) -> tuple[pd.DataFrame, FlushStats]:
    """Write `rate` updates/s for `seconds` to seeded picks from `pool`; sample the lag.

    A write-behind with its own flusher on `stream` takes the writes; `lag()` is sampled every
    25 ms until the producer is done and the queue is empty. Returns the samples (ms, lag in
    writes, age of the oldest in ms) and the writer's stats. Neither the producer nor the
    flusher outlives the call, whatever happens.
    """
    load = InsuranceWriteBehind(cache, db, stream=stream, batch_size=batch_size, interval=interval)
    await load.start()
    rng, samples, begin = random.Random(seed), [], time.perf_counter()

    async def produce() -> None:
        for i in range(round(rate * seconds)):
            await asyncio.sleep(max(0.0, begin + i / rate - time.perf_counter()))
            await load.update_policy(rng.choice(pool), premium=float(4000 + i))

    producer = asyncio.create_task(produce())
    try:
        while True:
            lag = await load.lag()
            samples.append(((time.perf_counter() - begin) * 1000, lag.total, lag.oldest_age * 1000))
            if producer.done() and lag.total == 0:
                break
            await asyncio.sleep(0.025)
        await producer
    finally:
        producer.cancel()
        await load.stop()
    return pd.DataFrame(samples, columns=["ms", "lag", "oldest_ms"]), load.stats


async def lag_run_alone(
    namespace: str,
    pool: Sequence[str],
    batch_size: int,
    interval: float,
    *,
    url: str | None = None,
    rate: float = 200,
    seconds: float = 0.8,
) -> tuple[pd.DataFrame, FlushStats]:
    """`lag_run` on resources of its own: a client, a database copy, a cache; all closed after.

    The database is a fresh copy in a temporary folder (the lab's latencies), the cache has
    no backplane and lives under `namespace`; `pool` is warmed first. Its keys, client,
    database files and flusher are gone when it returns, so a slider can call it at any time.
    """
    run_dir = Path(tempfile.mkdtemp(prefix="labcache-lag-"))
    client = await connect(url, announce=False)
    run_db = InsuranceDB(database=run_dir / "insurance.db")
    fast = InsuranceDB(database=run_dir / "insurance.db", latency=Latency.zero())
    cache = MultiLevelCache(client, namespace=namespace, backplane=False)
    try:
        for pid in pool:
            await cache.get(f"policy:{pid}", functools.partial(fast.get_policy, pid))
        return await lag_run(cache, run_db, pool, batch_size, interval, rate=rate, seconds=seconds)
    finally:
        await unlink_matching(client, cache.namespace + "*")
        await cache.close()
        run_db.close()
        fast.close()
        await client.aclose()
        shutil.rmtree(run_dir, ignore_errors=True)


def lag_figure(runs: Mapping[int, tuple[pd.DataFrame, FlushStats]], title: str) -> Any:
    """Two panels over time: the lag in writes, and the age of the oldest write (ms)."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    from labcache.lab.display import COLORS, style

    fig = make_subplots(
        rows=2,
        cols=1,
        shared_xaxes=True,
        vertical_spacing=0.1,
        subplot_titles=["writes not yet in the database", "age of the oldest of them"],
    )
    palette = [COLORS["stale"], COLORS["l2"], COLORS["l1"], COLORS["naive"]]
    for (size, (frame, _)), color in zip(runs.items(), palette, strict=False):
        name = f"batch_size={size}"
        fig.add_trace(
            go.Scatter(x=frame.ms, y=frame.lag, name=name, line_color=color), row=1, col=1
        )
        oldest = go.Scatter(
            x=frame.ms, y=frame.oldest_ms, name=name, line_color=color, showlegend=False
        )
        fig.add_trace(oldest, row=2, col=1)
    style(fig, title, "", "lag (writes)", height=560)
    fig.update_yaxes(title_text="oldest write (ms)", row=2, col=1)
    fig.update_xaxes(title_text="time since the first write (ms)", row=2, col=1)
    return fig
