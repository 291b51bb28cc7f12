"""Notebook 06's hot key: a steady request rate across expiries, and the figure of a run."""

from __future__ import annotations

import pandas as pd
import redis.asyncio as aioredis

from labcache.lab.data import InsuranceDB
from labcache.lab.hot_key import draw_timeline, requests_of, steady, timeline_figure
from labcache.multilevel import Staleness


async def keys_under(redis: aioredis.Redis, prefix: str) -> list[bytes]:
    return [key async for key in redis.scan_iter(match=prefix + "*")]


async def test_a_plain_ttl_makes_readers_wait_at_each_expiry(
    redis: aioredis.Redis, namespace: str
) -> None:
    db = InsuranceDB(latency_scale=0.05)  # a policy takes 5 ms
    try:
        df = await steady(redis, db, {}, namespace=namespace, rate=100, seconds=0.5, ttl=0.2)
    finally:
        db.close()
    requests = requests_of(df)
    assert len(requests) == 50  # every request answered, the warm-up not among them
    loads = int((df.kind == "load").sum())
    assert loads >= 1  # the 0.2 s TTL ran out during the 0.5 s run
    assert (requests.kind == "miss").sum() >= loads  # each expiry's first reader waited
    assert (df.start >= 0).all() and (df.t >= df.start).all()
    assert await keys_under(redis, namespace) == []  # the run empties its namespace


async def test_grace_serves_stale_instead_of_waiting(redis: aioredis.Redis, namespace: str) -> None:
    db = InsuranceDB(latency_scale=0.05)
    try:
        options = {"staleness": Staleness(grace=1.0)}
        df = await steady(redis, db, options, namespace=namespace, rate=100, seconds=0.5, ttl=0.2)
    finally:
        db.close()
    requests = requests_of(df)
    assert (requests.kind == "miss").sum() == 0
    assert (requests.kind == "stale").sum() >= 1


def test_the_timeline_draws_measured_values_and_says_what_it_cannot() -> None:
    df = pd.DataFrame(
        {
            "kind": ["hit", "hit", "miss", "load", "hit"],
            "level": ["l1", "l2", "source", "source", "l1"],
            "ms": [0.004, 0.3, 21.0, 20.0, 0.0],
            "detail": [""] * 5,
            "t": [0.1, 0.2, 0.321, 0.32, 0.4],
            "start": [0.1, 0.2, 0.3, 0.3, 0.4],
        }
    )
    fig = timeline_figure()
    draw_timeline(fig, df, "a run")
    l1, l2, stale, waited, loads = fig.data
    assert list(l1.y) == [0.004]  # no floor: the measured value, on a log axis
    assert list(l2.y) == [0.3] and list(waited.y) == [21.0] and list(stale.y) == []
    assert list(loads.x) == [0.3] and list(loads.y) == [20.0]  # when it started, how long
    assert loads.yaxis == "y2"  # the loads have a panel of their own
    assert fig.layout.title.text == "a run (1 requests at 0 ms not drawn)"
