"""The KEYS experiments' plumbing (`labcache.lab.ping_stall`, notebooks 02 and 04), on a server."""

from __future__ import annotations

import asyncio

import redis.asyncio as aioredis

from labcache.embedded import RedisServer
from labcache.lab.ping_stall import IDLE, PingProcess, fill, ping_tables, timed

# Busy-waits on the server for ARGV[1] microseconds: one command that blocks every other client.
BLOCK = """
local t0 = redis.call('TIME')
local start = tonumber(t0[1]) * 1000000 + tonumber(t0[2])
repeat
  local t = redis.call('TIME')
until tonumber(t[1]) * 1000000 + tonumber(t[2]) - start >= tonumber(ARGV[1])
return 1
"""


async def test_fill_writes_every_key_with_its_ttl_and_tag(fresh_server: RedisServer) -> None:
    client = aioredis.from_url(fresh_server.url)
    try:
        done: list[int] = []

        class Progress:
            def update(self, n: int) -> None:
                done.append(n)

        keys = [f"k:{i}" for i in range(2_500)]
        await fill(
            client,
            keys,
            tag_key="tag",
            ttl_ms=60_000,
            batch=100,
            per_pipeline=10,
            progress=Progress(),
        )
        assert await client.dbsize() == 2_501  # the keys and their tag set
        assert await client.scard("tag") == 2_500
        assert 0 < await client.pttl("k:2499") <= 60_000
        assert done == [1_000, 1_000, 500]
    finally:
        await client.aclose()


async def test_ping_process_records_round_trips_and_tables_assign_them(
    fresh_server: RedisServer,
) -> None:
    client = aioredis.from_url(fresh_server.url)
    try:
        async with PingProcess(client) as pinger:
            await asyncio.sleep(0.1)  # idle PINGs
            _, t0, t1 = await timed(lambda: asyncio.sleep(0.2))  # a 200 ms "run"
            await asyncio.sleep(0.1)
        assert pinger.samples, "the second process sent no PING"
        assert pinger._proc is not None and pinger._proc.returncode == 0  # it stopped by itself
        assert all(seconds >= 0 for _, seconds in pinger.samples)
        pings, runs, summary = ping_tables(pinger.samples, [("job", t0, t1, 7, {"set": 2})])
        assert len(pings) == len(pinger.samples)
        in_run = [s for s, d in pinger.samples if s < t1 and s + d > t0]
        assert in_run, "no PING was in flight during the 200 ms run"
        assert summary.loc["job", "pings"] == len(in_run)
        assert summary.loc[IDLE, "pings"] == len(pinger.samples) - len(in_run)
        assert summary.loc["job", "commands per run"] == "2 SET"
        assert runs.loc[0, "removed"] == 7 and 190 <= runs.loc[0, "ms"] < 1000
    finally:
        await client.aclose()


async def test_a_blocking_command_holds_the_second_process_ping(fresh_server: RedisServer) -> None:
    client = aioredis.from_url(fresh_server.url)
    try:
        async with PingProcess(client) as pinger:
            await asyncio.sleep(0.05)
            _, t0, t1 = await timed(lambda: client.eval(BLOCK, 0, 100_000))  # 100 ms on the server
            await asyncio.sleep(0.05)
        pings, _, summary = ping_tables(pinger.samples, [("block", t0, t1, 0, {"eval": 1})])
        assert t1 - t0 >= 0.1
        assert summary.loc["block", "worst_ms"] >= 50, f"no PING waited for the script: {pings}"
        assert summary.loc[IDLE, "median_ms"] < 50
    finally:
        await client.aclose()


async def test_ping_process_is_killed_when_the_block_raises(fresh_server: RedisServer) -> None:
    client = aioredis.from_url(fresh_server.url)
    try:
        pinger = PingProcess(client)
        try:
            async with pinger:
                raise KeyError("boom")
        except KeyError:
            pass
        assert pinger._proc is not None and pinger._proc.returncode is not None
        assert pinger.samples == []
    finally:
        await client.aclose()
