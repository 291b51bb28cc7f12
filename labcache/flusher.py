"""The write-behind flusher: applies a Redis Stream of queued writes to the database.

It reads with a consumer group in batches, commits each batch in one database transaction and
acknowledges it only after the commit; entries a crashed flusher left pending are claimed
(XAUTOCLAIM) and applied. It runs as a task beside `WriteBehind`, or as its own process:
`python -m labcache.lab.flush flush --url ... --db ...` (the course's SQLite database).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
import uuid
from collections.abc import Awaitable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol, TypeVar

import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from labcache.aside import REDIS_FAILURES
from labcache.stats import Counters
from labcache.tasks import cancel_and_wait
from labcache.validate import positive_seconds, seconds, whole

logger = logging.getLogger(__name__)
T = TypeVar("T")
Entry = tuple[bytes, dict[bytes, bytes]]  # (stream id, fields) as redis-py returns them
# A queued write as the sink receives it: (table, row id, the row's new fields, version).
QueuedWrite = tuple[str, str, Mapping[str, Any], int]


class BatchSink(Protocol):
    """Where a flusher applies queued writes (the course's `InsuranceDB` is one).

    `apply_writes` applies a batch in one transaction and answers per write "applied", "stale"
    (the row already has a newer version) or "invalid: <why>" (changes nothing, keeps going).
    """

    async def apply_writes(self, writes: Sequence[QueuedWrite]) -> list[str]: ...


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


@dataclass(frozen=True)
class Lag(Counters):
    """Writes in the cache but not yet in the database: the data-loss window, right now."""

    DERIVED: ClassVar[tuple[str, ...]] = ("total",)

    pending: int  # read by a flusher, not yet acknowledged
    undelivered: int  # not yet read by any flusher
    oldest_age: float  # seconds since the oldest of them was queued (0.0 when none)

    @property
    def total(self) -> int:
        return self.pending + self.undelivered


@dataclass
class FlushStats(Counters):
    """Counts of one writer/flusher, since it was made."""

    queued: int = 0  # writes put in the stream by this object
    batches: int = 0  # database transactions
    applied: int = 0  # entries that changed the database
    stale: int = 0  # skipped: the row already had a newer version (replays, reordering)
    dead: int = 0  # invalid entries, moved to the dead-letter stream
    reclaimed: int = 0  # entries taken over from a flusher that stopped acknowledging
    failures: int = 0  # batches that failed (database or Redis down) and will be retried


class Flusher:
    """Applies a write-behind stream to the database in batches; acks only after the commit.

    A batch is flushed when it holds `batch_size` entries or `interval` seconds after its first
    entry arrived. Before new entries, a flusher re-reads its own unacknowledged ones (after a
    restart or a failure) and claims those idle for `min_idle` seconds in other consumers (a
    flusher that crashed): nothing read is ever dropped. Applied entries are acknowledged and
    deleted in one MULTI, so the stream holds exactly the writes not yet in the database.
    """

    def __init__(
        self,
        redis: aioredis.Redis,
        db: BatchSink,
        stream: str,
        *,
        group: str = "flushers",
        consumer: str | None = None,
        batch_size: int = 100,
        interval: float = 0.5,
        min_idle: float = 30.0,
    ) -> None:
        whole(batch_size, "batch_size")
        seconds(min_idle, "min_idle")
        self.redis = redis
        self.db = db
        self.stream = stream
        self.group = group
        self.consumer = consumer or f"flusher-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.dead_letters = f"{stream}:dead"
        self.batch_size = batch_size
        self.interval = positive_seconds(interval, "interval")
        self.min_idle = float(min_idle)
        self.stats = FlushStats()
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._drain_on_stop = True
        self._own_first = True  # re-read what was delivered to us but never acknowledged
        self._claim_cursor = "0-0"
        self._group_ready = False

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def start(self) -> Flusher:
        """Flush in a background task until `stop()`."""
        if not self.running:
            await self.ensure_group()
            self._stopping.clear()
            self._own_first = True
            self._task = asyncio.create_task(self._run(), name=f"flusher:{self.stream}")
        return self

    async def stop(self, *, drain: bool = True, timeout: float = 30.0) -> None:
        """Stop the background task; first (by default) apply everything queued.

        A batch already read always finishes. If draining fails or takes longer than `timeout`,
        the task is cancelled and the rest stays safely in the stream for the next flusher.
        """
        task, self._task = self._task, None
        if task is not None:
            self._drain_on_stop = drain
            self._stopping.set()
            try:
                await asyncio.wait_for(asyncio.shield(task), timeout)
            except asyncio.TimeoutError:
                logger.warning("%s: not drained after %g s; the rest stays queued", self, timeout)
            except Exception as exc:
                logger.warning("%s stopped on %r; the rest stays queued", self, exc)
            finally:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        await self._leave_group()

    async def ensure_group(self) -> None:
        """Create the stream and its consumer group (from id 0: no queued write is skipped)."""
        try:
            await self.redis.xgroup_create(self.stream, self.group, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self._group_ready = True

    def __repr__(self) -> str:
        return f"Flusher({self.stream!r}, group={self.group!r}, consumer={self.consumer!r})"

    # -- flushing ----------------------------------------------------------------------------

    async def flush_once(self) -> int:
        """Read one batch without waiting, apply it, ack it; return how many entries it had."""
        if not self._group_ready:
            await self.ensure_group()
        batch = await self._recover() or await self._read(self.batch_size, None)
        if batch:
            await self._apply(batch)
        return len(batch)

    async def flush(self, timeout: float | None = 30.0) -> int:
        """Return once every write queued so far is in the database; how many this call applied.

        With the background task running, it waits for that task; writes held by another
        flusher are waited for, or claimed once idle for `min_idle` seconds.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        handled = 0
        while True:
            done = 0 if self.running else await self.flush_once()
            handled += done
            if done:
                continue
            lag = await self.lag()
            if lag.total == 0:
                return handled
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"{lag.total} writes still not in the database after {timeout}s")
            await asyncio.sleep(min(0.01, self.interval))  # another flusher holds the rest

    async def lag(self) -> Lag:
        """What is queued but not yet in the database, and how old the oldest such write is."""
        if not self._group_ready:
            await self.ensure_group()
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.xlen(self.stream)
            pipe.xpending(self.stream, self.group)
            pipe.xrange(self.stream, count=1)
            pipe.time()
            length, pending, first, (seconds, micros) = await pipe.execute()
        count = int(pending["pending"])
        oldest = 0.0
        if first:
            queued_ms = int(_text(first[0][0]).split("-")[0])
            oldest = max(0.0, seconds + micros / 1e6 - queued_ms / 1000)
        return Lag(pending=count, undelivered=max(0, int(length) - count), oldest_age=oldest)

    async def _run(self) -> None:
        backoff = 0.0
        while not self._stopping.is_set():
            try:
                batch = await self._until_stopped(self._gather())
                if batch is None:  # stopping: what was read is re-read by the drain
                    self._own_first = True
                    break
                if batch:
                    await self._apply(batch)  # never interrupted by stop(): it finishes
                backoff = 0.0
            except Exception as exc:  # Redis or the database is down: the entries stay queued
                backoff = min(max(backoff * 2, 0.05), 2.0)
                self._failed(exc, backoff)
                await self._until_stopped(asyncio.sleep(backoff))
        if self._drain_on_stop:
            while await self.flush_once():
                pass

    async def _until_stopped(self, work: Awaitable[T]) -> T | None:
        """`work`'s result, or None (and `work` cancelled) if stop() is called first."""
        job = asyncio.ensure_future(work)
        stop = asyncio.ensure_future(self._stopping.wait())
        try:
            await asyncio.wait({job, stop}, return_when=asyncio.FIRST_COMPLETED)
        except BaseException:
            job.cancel()
            raise
        finally:
            stop.cancel()
        if job.done():
            return job.result()
        await cancel_and_wait([job])
        return None

    async def _gather(self) -> list[Entry]:
        """Recovered entries at once; else wait up to `interval` for one, then fill the batch."""
        if not self._group_ready:
            await self.ensure_group()
        batch = await self._recover()
        if batch:
            return batch
        batch = await self._read(self.batch_size, self.interval)
        deadline = time.monotonic() + self.interval
        while batch and len(batch) < self.batch_size:
            left = deadline - time.monotonic()
            more = await self._read(self.batch_size - len(batch), left) if left > 0 else []
            if not more:
                break
            batch += more
        return batch

    async def _recover(self) -> list[Entry]:
        """Our own unacknowledged entries first; then entries idle in a consumer that died."""
        if self._own_first:
            own = await self._read(self.batch_size, None, own=True)
            if own:
                return own
            self._own_first = False
        reply = await self.redis.xautoclaim(
            self.stream,
            self.group,
            self.consumer,
            round(self.min_idle * 1000),
            self._claim_cursor,
            count=self.batch_size,
        )
        self._claim_cursor = _text(reply[0])
        claimed: list[Entry] = list(reply[1])
        if claimed:
            self.stats.reclaimed += len(claimed)
            logger.info(
                "%s claimed %d writes idle for over %g s", self, len(claimed), self.min_idle
            )
        return claimed

    async def _read(self, count: int, block: float | None, *, own: bool = False) -> list[Entry]:
        # Block at most 1 s: longer than the client's socket_timeout, the read itself would fail.
        block_ms = None if block is None else max(1, round(min(block, 1.0) * 1000))
        reply: Any = await self.redis.xreadgroup(
            self.group,
            self.consumer,
            {self.stream: "0" if own else ">"},
            count=count,
            block=block_ms,
        )
        if not reply:
            return []
        if isinstance(reply, dict):  # RESP3: {stream: [entries]}
            (entries,) = reply.values()
            return list(entries[0] if entries and isinstance(entries[0], list) else entries)
        return list(reply[0][1])  # RESP2: [[stream, entries]]

    async def _apply(self, batch: list[Entry]) -> None:
        try:
            await self._commit_then_ack(batch)
        except BaseException:
            self._own_first = True  # the batch is still ours and unacked: re-read it first
            raise

    async def _commit_then_ack(self, batch: list[Entry]) -> None:
        """Commit the batch to the database, then ack + delete it (and dead-letter bad entries)."""
        ids = [entry_id for entry_id, _ in batch]
        parsed: list[tuple[bytes, dict[str, str], tuple[str, str, dict[str, Any], int]]] = []
        dead: list[tuple[bytes, dict[str, str], str]] = []
        for entry_id, raw in batch:
            if not raw:
                continue  # deleted from the stream under us: nothing to apply, only to ack
            fields = {_text(k): _text(v) for k, v in raw.items()}
            try:
                write = (fields["table"], fields["id"], json.loads(fields["fields"]))
                parsed.append((entry_id, fields, (*write, int(fields["version"]))))
            except (KeyError, ValueError) as exc:
                dead.append((entry_id, fields, f"invalid: malformed entry ({exc!r})"))
        outcomes = await self.db.apply_writes([w for _, _, w in parsed]) if parsed else []
        self.stats.batches += 1
        for (entry_id, fields, _), outcome in zip(parsed, outcomes, strict=True):
            if outcome == "applied":
                self.stats.applied += 1
            elif outcome == "stale":
                self.stats.stale += 1
            else:
                dead.append((entry_id, fields, outcome))
        async with self.redis.pipeline(transaction=True) as pipe:
            for entry_id, fields, why in dead:
                logger.error("%s: write %s dead-lettered: %s", self, _text(entry_id), why)
                letter: Any = {**fields, "entry": entry_id, "error": why}
                pipe.xadd(self.dead_letters, letter)
            pipe.xack(self.stream, self.group, *ids)
            pipe.xdel(self.stream, *ids)
            await pipe.execute()
        self.stats.dead += len(dead)

    def _failed(self, exc: BaseException, backoff: float) -> None:
        self.stats.failures += 1
        self._own_first = True
        if isinstance(exc, ResponseError) and "NOGROUP" in str(exc):
            self._group_ready = False  # the stream was deleted: recreate the group
        logger.warning("%s: batch failed (%r); retrying in %.2f s", self, exc, backoff)

    async def _leave_group(self) -> None:
        """Remove this consumer from the group if it holds nothing (consumers pile up otherwise)."""
        with contextlib.suppress(*REDIS_FAILURES):
            mine = await self.redis.xpending_range(
                self.stream, self.group, min="-", max="+", count=1, consumername=self.consumer
            )
            if not mine:
                await self.redis.xgroup_delconsumer(self.stream, self.group, self.consumer)
