"""Write-through and write-behind (Part 7) on real redis-servers and a file-backed SQLite.

The database is a file, so a test (or a second process) can read what was really committed with
its own sqlite3 connection, independent of the InsuranceDB object under test.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import shutil
import signal
import sqlite3
import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from labcache.aside import REDIS_FAILURES, ValueTooLarge
from labcache.embedded import RedisServer
from labcache.events import CacheEvent
from labcache.lab.data import InsuranceDB, Latency, SourceUnavailable
from labcache.lab.writes import InsuranceWriteBehind, InsuranceWriteThrough
from labcache.multilevel import Guard, MultiLevelCache, Stampede
from labcache.ttl import Jitter
from labcache.writes import Flusher, Lag, WriteBehind, WriteThrough
from tests.helpers import command_counts, commands_sent

PID = "12345"
KEY = f"policy:{PID}"
REPO = Path(__file__).resolve().parent.parent


# -- fixtures and helpers --------------------------------------------------------------------


@pytest.fixture(scope="session")
def template_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("writes") / "template.db"
    InsuranceDB(database=path, latency=Latency.zero()).close()
    return path


@pytest.fixture
def db_path(template_db: Path, tmp_path: Path) -> Path:
    path = tmp_path / "insurance.db"
    shutil.copy(template_db, path)
    return path


@pytest.fixture
def db(db_path: Path) -> Iterator[InsuranceDB]:
    database = InsuranceDB(database=db_path, latency=Latency.zero())
    yield database
    database.close()


def query(path: Path, sql: str, *args: Any) -> list[Any]:
    """Read the database file with a connection of our own: what is really committed."""
    with contextlib.closing(sqlite3.connect(path, timeout=10)) as conn:
        return conn.execute(sql, args).fetchall()


def premium(path: Path, pid: str = PID) -> float:
    return float(query(path, "SELECT premium FROM policies WHERE id = ?", pid)[0][0])


def version(path: Path, pid: str = PID) -> int:
    return int(query(path, "SELECT version FROM policies WHERE id = ?", pid)[0][0])


async def fail() -> object:
    raise AssertionError("the loader should not run")


async def pending(redis: aioredis.Redis, stream: str) -> int:
    return int((await redis.xpending(stream, "flushers"))["pending"])


def entry(version: int, premium: float, pid: str = PID) -> dict[str, Any]:
    """A write-behind stream entry as WriteBehind.write queues it."""
    fields = json.dumps({"premium": premium})
    return {"key": f"policy:{pid}", "table": "policies", "id": pid, "fields": fields,
            "version": version}  # fmt: skip


async def queue(wb: WriteBehind, pids: Sequence[str], base: float) -> dict[str, float]:
    """One premium write per policy (value base + i); return what each row must end with."""
    expected = {}
    for i, pid in enumerate(pids):
        value = base + i
        await wb.write(f"policy:{pid}", {"premium": value}, table="policies", row_id=pid,
                       fields={"premium": value})  # fmt: skip
        expected[pid] = value
    return expected


def assert_rows(path: Path, expected: Mapping[str, float]) -> None:
    marks = ",".join("?" * len(expected))
    rows = query(path, f"SELECT id, premium FROM policies WHERE id IN ({marks})", *expected)
    assert dict(rows) == expected


async def limited_client(server: RedisServer, user: str, *rules: str) -> aioredis.Redis:
    """A client logged in as an ACL user allowed everything except `rules` (e.g. "-set")."""
    admin = aioredis.from_url(server.url)
    await admin.execute_command("ACL", "SETUSER", user, "on", ">pw", "~*", "&*", "+@all", *rules)
    await admin.aclose()
    return aioredis.from_url(f"redis://{user}:pw@127.0.0.1:{server.port}/0")


# -- write-through ---------------------------------------------------------------------------


async def test_write_through_commits_the_database_before_touching_the_cache(
    cache: MultiLevelCache, db: InsuranceDB, db_path: Path, redis: aioredis.Redis
) -> None:
    old = await cache.get(KEY, lambda: db.get_policy(PID))
    record_before = await redis.get(cache.key(KEY))
    db_at_cache_set: list[float] = []
    cache.events.subscribe(
        lambda e: db_at_cache_set.append(premium(db_path)) if e.kind == "set" else None
    )
    cache_at_commit: list[bytes | None] = []

    async def save() -> Any:
        row = await db.update_policy(PID, premium=1234.5)
        cache_at_commit.append(await redis.get(cache.key(KEY)))
        return row

    row = await WriteThrough(cache, db).write(KEY, save)
    assert cache_at_commit == [record_before]  # the cache still held the old record at commit
    assert db_at_cache_set == [1234.5]  # the database had the new row when the cache was written
    assert row["premium"] == 1234.5 and row["version"] == old["version"] + 1
    assert await cache.get(KEY, fail) == row
    assert db.calls["update_policy"] == 1


async def test_update_policy_refreshes_every_instance_and_drops_related_tags(
    cache: MultiLevelCache, db: InsuranceDB, redis: aioredis.Redis, namespace: str
) -> None:
    async with MultiLevelCache(redis, namespace=namespace) as other:
        await other.get(KEY, lambda: db.get_policy(PID))  # other instance: an L1 copy
        owner = (await db.get_policy(PID) or {})["customer_id"]
        await cache.set(f"customer:{owner}:policies", [PID], tags=[f"customer:{owner}"])
        wt = InsuranceWriteThrough(cache, db)
        row = await wt.update_policy(PID, premium=999.0, drop_tags=[f"customer:{owner}"])
        await other.backplane.wait_received(2)  # the SET's and the tag's invalidations
        assert cache.key(KEY) not in other.l1
        assert await other.get(KEY, fail) == row  # from Redis: the new row
        assert await redis.exists(cache.key(f"customer:{owner}:policies")) == 0
        assert (wt.stats.writes, wt.stats.cache_failures) == (1, 0)


async def test_database_failure_leaves_the_cache_untouched(
    cache: MultiLevelCache, db: InsuranceDB, redis: aioredis.Redis
) -> None:
    old = await cache.get(KEY, lambda: db.get_policy(PID))
    record = await redis.get(cache.key(KEY))
    wt = InsuranceWriteThrough(cache, db)
    before = await command_counts(redis)
    with db.outage(), pytest.raises(SourceUnavailable):
        await wt.update_policy(PID, premium=1.0)
    with pytest.raises(ValueError, match="premium must be float"):
        await wt.update_policy(PID, premium="cheap")
    assert await commands_sent(redis, before) == {}  # not one command reached Redis
    assert cache.l1[cache.key(KEY)][0] == old
    assert await redis.get(cache.key(KEY)) == record
    assert (wt.stats.writes, wt.stats.db_failures) == (0, 2)


async def test_cache_write_refused_by_acl_invalidates_the_key_everywhere(
    fresh_server: RedisServer, db: InsuranceDB, db_path: Path
) -> None:
    admin = aioredis.from_url(fresh_server.url)
    no_set = await limited_client(fresh_server, "noset", "-set")
    async with (
        MultiLevelCache(no_set, namespace="wt:") as writer,
        MultiLevelCache(admin, namespace="wt:") as reader,
    ):
        await reader.get(KEY, lambda: db.get_policy(PID))  # reader's L1 and Redis: old row
        await writer.get(KEY, fail)  # writer's L1: old row, from Redis
        events: list[CacheEvent] = []
        writer.events.subscribe(events.append)
        wt = InsuranceWriteThrough(writer, db)
        row = await wt.update_policy(PID, premium=2222.0)
        assert premium(db_path) == 2222.0 == row["premium"]
        assert await admin.exists("wt:" + KEY) == 0  # dropped from Redis...
        assert "wt:" + KEY not in writer.l1  # ...from this L1...
        await reader.backplane.wait_received(1)
        assert "wt:" + KEY not in reader.l1  # ...and from the other instance's
        assert await reader.get(KEY, lambda: db.get_policy(PID)) == row  # next read: new row
        errors = [e.detail for e in events if e.kind == "error"]
        assert len(errors) == 1 and "NoPermissionError" in errors[0]
        assert (wt.stats.cache_failures, wt.stats.invalidation_failures) == (1, 0)
    await no_set.aclose()
    await admin.aclose()


async def test_when_invalidation_fails_too_l1_is_dropped_and_the_window_is_reported(
    fresh_server: RedisServer, db: InsuranceDB, db_path: Path
) -> None:
    admin = aioredis.from_url(fresh_server.url)
    read_only = await limited_client(fresh_server, "readonly", "-set", "-unlink", "-del")
    async with (
        MultiLevelCache(read_only, namespace="wt:") as writer,
        MultiLevelCache(admin, namespace="wt:") as reader,
    ):
        old = await reader.get(KEY, lambda: db.get_policy(PID), ttl=60)
        await writer.get(KEY, fail)
        events: list[CacheEvent] = []
        writer.events.subscribe(events.append)
        wt = InsuranceWriteThrough(writer, db, ttl=60)
        await wt.update_policy(PID, premium=3333.0)
        assert premium(db_path) == 3333.0
        assert "wt:" + KEY not in writer.l1  # evicted locally whatever Redis says
        await reader.backplane.wait_received(1)  # PUBLISH was allowed: the other L1 dropped it
        assert "wt:" + KEY not in reader.l1
        errors = [e.detail for e in events if e.kind == "error"]
        assert len(errors) == 2 and "up to 60 s" in errors[1]
        assert (wt.stats.cache_failures, wt.stats.invalidation_failures) == (1, 1)
        # The documented window: Redis still serves the old row until its TTL runs out.
        assert 0 < await admin.pttl("wt:" + KEY) <= 60_000
        assert await writer.get(KEY, fail) == old
    await read_only.aclose()
    await admin.aclose()


async def test_server_killed_between_commit_and_cache_write(
    fresh_server: RedisServer, db: InsuranceDB, db_path: Path
) -> None:
    client = aioredis.from_url(fresh_server.url)
    cache = MultiLevelCache(client, namespace="wt:", backplane=False)
    await cache.get(KEY, lambda: db.get_policy(PID))
    wt = WriteThrough(cache, db)

    async def save_then_crash() -> Any:
        row = await db.update_policy(PID, premium=4444.0)
        fresh_server.kill()
        return row

    row = await wt.write(KEY, save_then_crash)
    assert row["premium"] == premium(db_path) == 4444.0  # the write itself succeeded
    assert cache.key(KEY) not in cache.l1
    assert (wt.stats.cache_failures, wt.stats.invalidation_failures) == (1, 1)
    fresh_server.start()  # back, empty (no persistence): the next read loads the new row
    assert (await cache.get(KEY, lambda: db.get_policy(PID)))["premium"] == 4444.0
    await client.aclose()


# -- write-behind: the write path ------------------------------------------------------------


async def test_write_behind_updates_the_cache_now_and_queues_one_entry(
    cache: MultiLevelCache, db: InsuranceDB, db_path: Path, redis: aioredis.Redis
) -> None:
    wb = InsuranceWriteBehind(cache, db)
    old = await cache.get(KEY, lambda: db.get_policy(PID))
    await wb.update_policy("12346", premium=1.0)  # loads the script once
    db.reset_calls()
    before = await command_counts(redis)
    new = await wb.update_policy(PID, premium=4321.0, coverage={"liability": 500_000})
    sent = await commands_sent(redis, before)
    # One EVALSHA did SET + INCR + XADD (commandstats counts the script's commands too).
    assert sent == {"evalsha": 1, "exists": 1, "incr": 1, "set": 1, "xadd": 1, "publish": 1}
    assert db.total_calls == 0  # the current row came from L1; the database is not written yet
    assert premium(db_path) == old["premium"]
    assert await cache.get(KEY, fail) == new
    assert new["coverage"] == {**old["coverage"], "liability": 500_000}
    _, fields = (await redis.xrange(wb.stream))[-1]
    assert set(fields) == {b"key", b"table", b"id", b"fields", b"version"}
    state = json.loads(fields[b"fields"])
    assert state["premium"] == 4321.0 and state["coverage"]["liability"] == 500_000
    assert await wb.flush() == 2
    row = await db.get_policy(PID)
    assert row is not None and {k: row[k] for k in new} == new  # cache and database agree


async def test_write_behind_writes_through_the_store_jitter_and_size_limit(
    redis: aioredis.Redis, namespace: str, db: InsuranceDB
) -> None:
    """Queued writes use the cache's store: their TTLs are jittered, an oversized value is
    refused before anything is cached or queued."""
    cache = MultiLevelCache(
        redis,
        namespace=namespace,
        backplane=False,
        stampede=Stampede(jitter=Jitter(0.5, random.Random(7))),
        guard=Guard(max_value_bytes=2_000),
    )
    wb = InsuranceWriteBehind(cache, db, ttl=100)
    pids = db.policy_ids()[:20]
    for pid in pids:
        await wb.update_policy(pid, premium=10.0)
    pttls = [await redis.pttl(cache.key(f"policy:{pid}")) for pid in pids]
    assert all(50_000 - 1000 <= p <= 150_000 for p in pttls)  # ±50 % of 100 s
    assert max(pttls) - min(pttls) > 20_000  # spread, not one expiry moment
    queued = await redis.xlen(wb.stream)
    big = {"id": PID, "notes": "x" * 5_000}
    with pytest.raises(ValueTooLarge, match="over max_value_bytes=2000"):
        await wb.write("policy:big", big, table="policies", row_id=PID, fields={"premium": 1.0})
    assert await redis.xlen(wb.stream) == queued and wb.stats.queued == len(pids)
    assert await redis.exists(cache.key("policy:big")) == 0


async def test_write_behind_rejects_bad_writes_before_queueing(
    cache: MultiLevelCache, db: InsuranceDB, redis: aioredis.Redis
) -> None:
    wb = InsuranceWriteBehind(cache, db)
    with pytest.raises(ValueError, match="premium must be float"):
        await wb.update_policy(PID, premium="cheap")
    with pytest.raises(ValueError, match="colour"):
        await wb.update_policy(PID, colour="red")
    with pytest.raises(KeyError):
        await wb.update_policy("999", premium=1.0)
    with pytest.raises(ValueError, match="cannot update"):
        await wb.write("x", 1, table="agents", row_id="A001", fields={"name": "X"})
    assert await redis.exists(wb.stream) == 0
    with pytest.raises(ValueError, match="batch_size"):
        WriteBehind(cache, db, batch_size=0)
    with pytest.raises(ValueError, match="interval"):
        WriteBehind(cache, db, interval=0)


async def test_write_behind_fails_loudly_when_redis_is_down(
    fresh_server: RedisServer, db: InsuranceDB
) -> None:
    client = aioredis.from_url(fresh_server.url)
    cache = MultiLevelCache(client, namespace="wb:", backplane=False)
    wb = InsuranceWriteBehind(cache, db)
    old = await cache.get(KEY, lambda: db.get_policy(PID))
    fresh_server.kill()
    with pytest.raises(REDIS_FAILURES):
        await wb.update_policy(PID, premium=5.0)
    assert cache.l1[cache.key(KEY)][0] == old  # nothing changed, here or anywhere
    assert wb.stats.queued == 0
    await client.aclose()


async def test_versions_keep_increasing_even_if_redis_loses_the_counter(
    cache: MultiLevelCache, db: InsuranceDB, redis: aioredis.Redis
) -> None:
    wb = WriteBehind(cache, db)
    expected = await queue(wb, [PID, PID], 10.0)
    versions = [int(f[b"version"]) for _, f in await redis.xrange(wb.stream)]
    assert versions[1] == versions[0] + 1
    await redis.unlink(wb.version_key)  # a Redis restarted without persistence
    v3 = await wb.write(KEY, {"premium": 30.0}, table="policies", row_id=PID,
                        fields={"premium": 30.0})  # fmt: skip
    assert v3 > versions[1]  # seeded from the server clock, not from 0: never skipped as old
    assert expected == {PID: 11.0}


# -- write-behind: the flusher ---------------------------------------------------------------


class WatchingDB(InsuranceDB):
    """A real InsuranceDB that notes, right after each commit, how many entries are unacked."""

    def __init__(self, path: Path, redis: aioredis.Redis, stream: str) -> None:
        super().__init__(database=path, latency=Latency.zero())
        self.redis, self.stream = redis, stream
        self.pending_at_commit: list[int] = []

    async def apply_writes(self, writes: Sequence[tuple[str, str, Mapping[str, Any], int]]) -> Any:
        outcomes = await super().apply_writes(writes)
        self.pending_at_commit.append(await pending(self.redis, self.stream))
        return outcomes


async def test_batches_are_acknowledged_only_after_the_database_commit(
    cache: MultiLevelCache, db_path: Path, redis: aioredis.Redis
) -> None:
    watching = WatchingDB(db_path, redis, cache.namespace + "__writes__")
    wb = WriteBehind(cache, watching, batch_size=4)
    expected = await queue(wb, watching.policy_ids()[:10], 100.0)
    assert await wb.flush() == 10
    assert watching.pending_at_commit == [4, 4, 2]  # each batch committed while still unacked
    assert watching.calls["apply_writes"] == 3
    assert_rows(db_path, expected)
    assert await wb.lag() == Lag(pending=0, undelivered=0, oldest_age=0.0)
    assert await redis.xlen(wb.stream) == 0  # acked entries are deleted too
    watching.close()


async def test_a_failed_commit_acks_nothing_and_is_retried(
    cache: MultiLevelCache, db: InsuranceDB, db_path: Path, redis: aioredis.Redis
) -> None:
    wb = WriteBehind(cache, db, batch_size=3)
    pids = db.policy_ids()[:5]
    before = {pid: premium(db_path, pid) for pid in pids}
    expected = await queue(wb, pids, 200.0)
    lag = await wb.lag()
    assert (lag.pending, lag.undelivered) == (0, 5)
    with db.outage(), pytest.raises(SourceUnavailable):
        await wb.flusher.flush_once()
    assert {pid: premium(db_path, pid) for pid in pids} == before
    lag = await wb.lag()
    assert (lag.pending, lag.undelivered, lag.total) == (3, 2, 5)
    assert lag.oldest_age >= 0
    assert await wb.flush() == 5  # its own 3 unacked entries first, then the other 2
    assert_rows(db_path, expected)
    assert (wb.stats.applied, wb.stats.batches) == (5, 2)


@pytest.mark.parametrize(("batch_size", "batches"), [(4, 3), (1000, 1)])
async def test_background_flusher_batches_by_size_or_interval(
    cache: MultiLevelCache, db: InsuranceDB, db_path: Path, batch_size: int, batches: int
) -> None:
    wb = WriteBehind(cache, db, batch_size=batch_size, interval=0.05)
    expected = await queue(wb, db.policy_ids()[:10], 300.0)
    async with wb:
        await wb.flush(timeout=30)  # waits for the background task
        assert db.calls["apply_writes"] == wb.stats.batches == batches
    # stop() ended the task: nothing keeps running after the writer is closed (mistake 10)
    assert not [t for t in asyncio.all_tasks() if t.get_name().startswith("flusher:")]
    assert_rows(db_path, expected)


async def test_replayed_and_reordered_entries_never_overwrite_a_newer_write(
    redis: aioredis.Redis, namespace: str, db: InsuranceDB, db_path: Path
) -> None:
    stream = namespace + "w"
    await redis.xadd(stream, entry(5, 500.0))
    await redis.xadd(stream, entry(3, 300.0))  # older, behind a newer one in the same batch
    flusher = Flusher(redis, db, stream)  # created after the writes: the group starts at id 0
    assert await flusher.flush() == 2
    assert premium(db_path) == 500.0
    await redis.xadd(stream, entry(5, 500.0))  # a replay...
    await redis.xadd(stream, entry(4, 400.0))  # ...and a late one, in a later batch
    assert await flusher.flush() == 2
    assert premium(db_path) == 500.0 and version(db_path) == 2  # applied exactly once
    assert query(db_path, "SELECT version FROM applied_writes WHERE id = ?", PID) == [(5,)]
    assert (flusher.stats.applied, flusher.stats.stale) == (1, 3)
    await redis.xadd(stream, entry(6, 600.0))
    await flusher.flush()
    assert premium(db_path) == 600.0 and flusher.stats.applied == 2


async def test_a_batch_committed_but_not_acked_is_replayed_as_stale(
    fresh_server: RedisServer, db_path: Path
) -> None:
    client = await limited_client(fresh_server, "flusher")
    admin = aioredis.from_url(fresh_server.url)

    class AckRefusedOnce(InsuranceDB):
        async def apply_writes(self, writes: Sequence[Any]) -> Any:
            outcomes = await super().apply_writes(writes)
            if not revoked:  # commit done; now make the ack that follows fail
                revoked.append(await admin.execute_command("ACL", "SETUSER", "flusher", "-xack"))
            return outcomes

    revoked: list[Any] = []
    db = AckRefusedOnce(database=db_path, latency=Latency.zero())
    flusher = Flusher(client, db, "wb:stream")
    for v, p in ((1, 10.0), (2, 20.0)):
        await admin.xadd("wb:stream", entry(v, p, pid=str(12340 + v)))
    with pytest.raises(ResponseError):
        await flusher.flush_once()
    assert premium(db_path, "12341") == 10.0 and premium(db_path, "12342") == 20.0  # committed
    assert await pending(admin, "wb:stream") == 2  # but not acknowledged
    await admin.execute_command("ACL", "SETUSER", "flusher", "+xack")
    assert await flusher.flush() == 2
    assert (flusher.stats.applied, flusher.stats.stale) == (2, 2)  # the replay changed nothing
    assert version(db_path, "12341") == version(db_path, "12342") == 2
    assert await admin.xlen("wb:stream") == 0
    db.close()
    await client.aclose()
    await admin.aclose()


async def test_invalid_entries_are_dead_lettered_without_blocking_the_rest(
    redis: aioredis.Redis, namespace: str, db: InsuranceDB, db_path: Path
) -> None:
    stream = namespace + "w"
    await redis.xadd(stream, {"key": "x", "table": "policies"})  # malformed
    bad_ref = {**entry(1, 1.0), "fields": json.dumps({"agent_id": "A999"})}
    await redis.xadd(stream, bad_ref)  # names an agent that does not exist
    await redis.xadd(stream, entry(2, 777.0))
    flusher = Flusher(redis, db, stream)
    assert await flusher.flush() == 3
    assert premium(db_path) == 777.0
    assert (flusher.stats.applied, flusher.stats.dead) == (1, 2)
    letters = [f[b"error"].decode() for _, f in await redis.xrange(flusher.dead_letters)]
    assert "malformed" in letters[0] and "A999" in letters[1]
    assert (await flusher.lag()).total == 0


async def test_writes_held_by_a_dead_flusher_are_reclaimed_after_min_idle(
    cache: MultiLevelCache, db: InsuranceDB, db_path: Path, redis: aioredis.Redis
) -> None:
    writer = WriteBehind(cache, db, consumer="crashed", batch_size=10)
    expected = await queue(writer, db.policy_ids()[:6], 400.0)
    with db.outage(), pytest.raises(SourceUnavailable):
        await writer.flusher.flush_once()  # "crashed" read them all, then never acked
    assert await pending(redis, writer.stream) == 6
    patient = Flusher(redis, db, writer.stream, consumer="patient", min_idle=60)
    assert await patient.flush_once() == 0  # not idle for a minute yet: still "crashed"'s
    eager = Flusher(redis, db, writer.stream, consumer="eager", min_idle=0)
    assert await eager.flush() == 6
    assert eager.stats.reclaimed == 6
    assert_rows(db_path, expected)


async def test_stop_drains_the_queue_and_stop_without_drain_keeps_it_safe(
    cache: MultiLevelCache, db: InsuranceDB, db_path: Path, redis: aioredis.Redis
) -> None:
    wb = WriteBehind(cache, db, batch_size=1000, interval=60)  # would hold a batch for a minute
    await wb.start()
    first = await queue(wb, db.policy_ids()[:30], 500.0)
    await wb.stop()  # interrupts the wait, then applies everything queued
    assert_rows(db_path, first)
    assert (await wb.lag()).total == 0 and not wb.flusher.running

    quick = WriteBehind(cache, db, batch_size=1000, interval=60, consumer="quick")
    await quick.start()
    second = await queue(quick, db.policy_ids()[30:35], 600.0)
    await quick.stop(drain=False)
    assert (await quick.lag()).total == 5  # nothing applied, nothing lost
    later = Flusher(redis, db, quick.stream, consumer="later", min_idle=0)
    assert await later.flush() == 5
    assert_rows(db_path, second)


@pytest.mark.slow
async def test_flusher_process_killed_mid_batch_loses_no_write(
    redis: aioredis.Redis, redis_url: str, namespace: str, db: InsuranceDB, db_path: Path
) -> None:
    cache = MultiLevelCache(redis, namespace=namespace, backplane=False)
    wb = WriteBehind(cache, db)
    pids = db.policy_ids()[:600]
    expected = await queue(wb, pids, 1000.0)
    expected.update(await queue(wb, pids[:100], 5000.0))  # rewrites: the last one must win
    total = 700
    command = [sys.executable, "-m", "labcache.lab.flush", "flush", "--url", redis_url,
               "--db", str(db_path), "--namespace", namespace, "--batch-size", "50",
               "--interval", "0.05", "--latency-scale", "2"]  # fmt: skip
    first = await asyncio.create_subprocess_exec(
        *command, "--consumer", "first", cwd=REPO, stderr=asyncio.subprocess.PIPE
    )
    try:
        # Once it has committed a few batches, freeze it; kill it if it holds a batch it has
        # not acknowledged (mid-batch), else let it run on and try again.
        while True:
            assert first.returncode is None, "the flusher exited early"
            if query(db_path, "SELECT COUNT(*) FROM applied_writes")[0][0] >= 100:
                os.kill(first.pid, signal.SIGSTOP)
                if await pending(redis, wb.stream) > 0:
                    break
                os.kill(first.pid, signal.SIGCONT)
            await asyncio.sleep(0.005)
        os.kill(first.pid, signal.SIGKILL)
    finally:
        with contextlib.suppress(ProcessLookupError):
            first.kill()
        await first.communicate()
    assert first.returncode == -signal.SIGKILL
    held = await pending(redis, wb.stream)
    applied_before = query(db_path, "SELECT COUNT(*) FROM applied_writes")[0][0]
    assert held > 0 and applied_before < 600  # killed mid-batch, with work left
    again = await asyncio.create_subprocess_exec(
        *command, "--consumer", "second", "--min-idle", "0", "--until-empty", cwd=REPO,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(again.communicate(), 120)
    assert again.returncode == 0, err.decode()
    stats = json.loads(out.decode().strip().splitlines()[-1])
    assert stats["reclaimed"] >= held
    assert_rows(db_path, expected)  # zero writes lost, and the newest of each row won
    versions = dict(query(db_path, "SELECT id, version FROM policies WHERE id IN "
                                   f"({','.join('?' * 600)})", *pids))  # fmt: skip
    assert {versions[p] for p in pids[:100]} == {3} and {versions[p] for p in pids[100:]} == {2}
    assert query(db_path, "SELECT COUNT(*) FROM applied_writes")[0][0] == 600
    assert await redis.xlen(wb.stream) == 0 and await pending(redis, wb.stream) == 0
    assert total == len(pids) + 100
