"""Notebook 07's write measurements (`labcache.lab.write_timing`), against the suite's Redis."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from labcache.lab.data import InsuranceDB, Latency
from labcache.lab.write_timing import lag_run, lag_run_alone, read_after_write, timeline_table
from labcache.multilevel import MultiLevelCache


@pytest.fixture
def db(tmp_path: Path) -> Iterator[InsuranceDB]:
    database = InsuranceDB(database=tmp_path / "insurance.db", latency=Latency.zero())
    yield database
    database.close()


async def test_read_after_write_samples_until_both_stores_hold_the_new_value() -> None:
    stores = {"cache": 1.0, "database": 1.0}
    reads = 0

    async def write() -> None:
        stores["database"] = 2.0
        await asyncio.sleep(0.03)  # the cache follows 30 ms later
        stores["cache"] = 2.0

    async def read() -> None:
        nonlocal reads
        reads += 1

    async def in_cache() -> float:
        return stores["cache"]

    frame = await read_after_write(
        write, read, in_cache, lambda: stores["database"], 2.0, at=0.01, least=0.1
    )
    assert list(frame.columns) == ["ms", "cache", "database"]
    assert tuple(frame.iloc[0][["cache", "database"]]) == (1.0, 1.0)
    assert tuple(frame.iloc[-1][["cache", "database"]]) == (2.0, 2.0)
    # sampling went on after the write, until both stores agreed
    assert frame.ms.is_monotonic_increasing and frame.ms.iloc[-1] >= 50
    assert reads >= 2
    table = timeline_table({"p": frame}, {"p": 2.0})
    assert table.loc["p", "database new at (ms)"] <= table.loc["p", "cache new at (ms)"]
    assert table.loc["p", "stores disagree for (ms)"] >= 20


async def test_lag_run_flushes_every_write_and_leaves_nothing_running(
    cache: MultiLevelCache, db: InsuranceDB
) -> None:
    pool = db.policy_ids()[:10]
    for pid in pool:
        await cache.get(f"policy:{pid}", lambda pid=pid: db.get_policy(pid))
    tasks_before = asyncio.all_tasks()
    frame, stats = await lag_run(cache, db, pool, 5, 0.02, rate=200, seconds=0.1)
    assert stats.queued == 20 and stats.applied + stats.stale == 20
    assert frame.lag.iloc[-1] == 0 and frame.lag.max() > 0
    assert list(frame.columns) == ["ms", "lag", "oldest_ms"]
    assert asyncio.all_tasks() <= tasks_before  # neither the producer nor the flusher is left
    premiums: dict[str, Any] = {pid: (await db.get_policy(pid))["premium"] for pid in pool}
    assert max(premiums.values()) == 4019.0  # the last write (4000 + 19) reached the database


def _lag_dirs() -> set[Path]:
    """The temporary folders `lag_run_alone` makes (it removes its own before returning)."""
    return {p for p in Path(tempfile.gettempdir()).iterdir() if p.name.startswith("labcache-lag-")}


async def test_lag_run_alone_cleans_up_after_itself(
    redis_url: str, redis: aioredis.Redis, namespace: str
) -> None:
    before = _lag_dirs()
    pool = [str(10001 + i) for i in range(5)]
    frame, stats = await lag_run_alone(
        namespace + "slider:", pool, 5, 0.02, url=redis_url, rate=100, seconds=0.1
    )
    assert stats.queued == 10 and frame.lag.iloc[-1] == 0
    assert [k async for k in redis.scan_iter(match=namespace + "*")] == []
    after = _lag_dirs()
    assert after == before, f"left behind: {after - before}"
    for path in after - before:  # pragma: no cover - only when the assertion above failed
        shutil.rmtree(path, ignore_errors=True)
