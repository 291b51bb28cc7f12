"""The benchmark's parts every scenario shares: sizes, rows, checks, interleaved timing.

Two rules keep the numbers honest on a shared 2-core machine:
- contenders of one scenario run in round-robin rounds (the order rotates each round), so a
  burst of machine noise lands on all of them alike, and a ratio within a scenario means more
  than any absolute time;
- a µs-level operation is timed in batches (one `perf_counter` pair per `batch` calls), so the
  timer's own cost does not dominate; every figure is reported per operation.
"""

from __future__ import annotations

import asyncio
import gc
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import redis.asyncio as aioredis

from labcache.aside import unlink_matching
from labcache.keys import glob_escape


@dataclass(frozen=True)
class Plan:
    """How big each scenario is: `full` (a few minutes), `quick` (well under a minute), `tiny`."""

    name: str
    rounds: int  # hit-path scenarios: round-robin rounds
    l1_batches: int  # batches of `l1_batch` calls per contender per round
    l1_batch: int
    l2_ops: int  # single calls per contender per round (L2 hits, misses), each timed
    warm_keys: int
    warm_rounds: int
    inv_total: int  # keys in the database during pattern invalidation
    inv_targets: int  # keys each invalidation removes
    inv_rounds: int
    stampede_n: int  # concurrent gets of one cold key
    stampede_rounds: int
    loader_sleep: float
    workload_requests: int  # per contender, split over `workload_rounds`
    workload_rounds: int
    workload_rate: float
    memory_requests: int  # the Zipf run that checks L1 stays bounded
    memory_entries: int  # L1 entries measured with tracemalloc

    @classmethod
    def full(cls) -> Plan:
        return cls("full", 30, 20, 100, 200, 10_000, 3, 200_000, 1_000, 5, 1_000, 5, 0.05,
                   12_000, 4, 1_000.0, 1_000_000, 2_000)  # fmt: skip

    @classmethod
    def quick(cls) -> Plan:
        return cls("quick", 8, 10, 100, 100, 1_000, 2, 20_000, 1_000, 3, 300, 2, 0.05,
                   1_000, 2, 1_000.0, 50_000, 500)  # fmt: skip

    @classmethod
    def tiny(cls) -> Plan:
        """For the test suite: every scenario and check runs, on a server shared with tests."""
        return cls("tiny", 3, 3, 50, 30, 300, 1, 2_000, 100, 2, 50, 1, 0.02,
                   300, 1, 1_000.0, 5_000, 100)  # fmt: skip


@dataclass
class Row:
    """One contender's result in one scenario; times are seconds per operation."""

    scenario: str
    contender: str
    median: float | None = None
    p99: float | None = None
    ops_per_s: float | None = None
    ratio: float | None = None  # median / the reference row's median
    reference: bool = False
    target: str = ""
    met: bool | None = None
    notes: str = ""
    status: str = "ok"  # ok | skipped | error
    samples: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Check:
    """A behavioural fact the run verified (counts, never timings)."""

    scenario: str
    name: str
    passed: bool
    detail: str = ""


@dataclass
class Result:
    """What one scenario produced."""

    rows: list[Row] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)

    def check(self, scenario: str, name: str, passed: bool, detail: str = "") -> None:
        self.checks.append(Check(scenario, name, bool(passed), detail))

    def skipped(self, scenario: str, contender: str, why: str) -> Row:
        row = Row(scenario, contender, status="skipped", notes=why)
        self.rows.append(row)
        return row


@dataclass
class Ctx:
    """What every scenario gets: the Redis, the plan, a private key prefix, the data."""

    url: str
    redis: aioredis.Redis
    plan: Plan
    prefix: str
    server_version: tuple[int, ...]
    policies: list[dict[str, Any]]
    customers: list[dict[str, Any]]

    def ns(self, name: str) -> str:
        """A namespace for one contender of one scenario, under the run's prefix."""
        return f"{self.prefix}{name}:"

    async def clean(self, namespace: str | None = None) -> int:
        """Remove this run's keys (or one namespace's): never anything else on the server."""
        pattern = glob_escape(namespace or self.prefix) + "*"
        return await unlink_matching(self.redis, pattern, count=5000)


# -- statistics ----------------------------------------------------------------------------


def median(xs: Sequence[float]) -> float:
    s = sorted(xs)
    n = len(s)
    if not n:
        return math.nan
    return s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2


def percentile(xs: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100)."""
    s = sorted(xs)
    if not s:
        return math.nan
    return s[min(len(s) - 1, max(0, math.ceil(p / 100 * len(s)) - 1))]


def timed_row(scenario: str, contender: str, samples: Sequence[float], **kw: Any) -> Row:
    """A row from per-operation samples (seconds): median, p99, ops/s."""
    m = median(samples)
    return Row(
        scenario,
        contender,
        median=m,
        p99=percentile(samples, 99),
        ops_per_s=1 / m if m > 0 else None,
        samples=len(samples),
        **kw,
    )


def set_ratios(rows: list[Row]) -> Row | None:
    """Fill `ratio` of every measured row against the group's reference row; return it."""
    ref = next((r for r in rows if r.reference and r.median), None)
    if ref is None or ref.median is None:
        return None
    for r in rows:
        if r.median is not None and r.status == "ok":
            r.ratio = r.median / ref.median
    return ref


# -- interleaved timing --------------------------------------------------------------------

Batch = Callable[[int], Awaitable[None]]


@dataclass
class Contender:
    """A named way of doing one operation `n` times (`batch(n)`)."""

    name: str
    batch: Batch
    reference: bool = False


async def interleave(
    contenders: Sequence[Contender], *, rounds: int, blocks: int, batch: int, warmup: int = 1
) -> dict[str, list[float]]:
    """Per-op seconds of `rounds × blocks` timed batches per contender, in rotating order."""
    for c in contenders:  # warm caches, connections and code paths; not recorded
        for _ in range(warmup):
            await c.batch(batch)
    samples: dict[str, list[float]] = {c.name: [] for c in contenders}
    n = len(contenders)
    gc.collect()
    # Contenders alternate batch by batch (A B C, B C A, ...), not block by block: a slow
    # second of a shared machine then lands on every contender alike, not on one of them.
    for r in range(rounds):
        for b in range(blocks):
            for i in range(n):
                c = contenders[(r + b + i) % n]
                t0 = time.perf_counter()
                await c.batch(batch)
                samples[c.name].append((time.perf_counter() - t0) / batch)
        await asyncio.sleep(0)
    return samples


# -- counting what the server saw ----------------------------------------------------------


async def command_counts(redis: aioredis.Redis) -> dict[str, tuple[int, int]]:
    """`{command: (calls, usec)}` from INFO commandstats."""
    stats = await redis.info("commandstats")
    return {
        name.removeprefix("cmdstat_"): (int(v["calls"]), int(v["usec"]))
        for name, v in stats.items()
    }


async def commands_since(
    redis: aioredis.Redis, before: dict[str, tuple[int, int]]
) -> dict[str, tuple[int, int]]:
    """Calls and server µs per command since `before`, leaving out the INFO that measures."""
    after = await command_counts(redis)
    diff = {
        k: (calls - before.get(k, (0, 0))[0], usec - before.get(k, (0, 0))[1])
        for k, (calls, usec) in after.items()
        if calls != before.get(k, (0, 0))[0]
    }
    diff.pop("info", None)
    return diff


def calls_only(diff: dict[str, tuple[int, int]]) -> dict[str, int]:
    return {k: v[0] for k, v in sorted(diff.items())}


# -- formatting ----------------------------------------------------------------------------


def fmt_time(seconds: float | None) -> str:
    if seconds is None or math.isnan(seconds):
        return "-"
    if seconds < 1e-6:
        return f"{seconds * 1e9:.0f} ns"
    if seconds < 1e-3:
        return f"{seconds * 1e6:.2f} µs" if seconds < 1e-5 else f"{seconds * 1e6:.1f} µs"
    if seconds < 1:
        return f"{seconds * 1e3:.2f} ms" if seconds < 1e-2 else f"{seconds * 1e3:.1f} ms"
    return f"{seconds:.2f} s"


def fmt_delta(seconds: float | None) -> str:
    """A signed time difference: +3.06 µs, −8.39 µs."""
    if seconds is None or math.isnan(seconds):
        return "-"
    return ("+" if seconds >= 0 else "−") + fmt_time(abs(seconds))


def fmt_rate(rate: float | None) -> str:
    if rate is None or math.isnan(rate):
        return "-"
    if rate >= 1e6:
        return f"{rate / 1e6:.2f}M"
    if rate >= 1e3:
        return f"{rate / 1e3:.1f}k"
    return f"{rate:.0f}"


def fmt_ratio(ratio: float | None) -> str:
    return "-" if ratio is None or math.isnan(ratio) else f"{ratio:.2f}×"


def pct(part: float, whole: float) -> str:
    return f"{100 * part / whole:.1f}%" if whole else "-"
