"""A drill for stampede protection: steady readers across many expiries, on a hand-moved clock.

The caches and Redis are real; only time is not. Readers arrive at a steady rate, a load takes
`delta` on the drill's clock, and readers keep arriving while it runs, which is the moment a
stampede happens (a check that waits for every refresh before the next read never sees it).
Before moving the clock on, the drill waits until every reader and every load is either done
or parked on a load that has not finished yet, so each reader sees exactly what the
caches hold at its instant.

For each expiry it counts the loads (recomputations) and the readers that waited for the
source, and how long before the old record's expiry the first load started.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from labcache.multilevel import MultiLevelCache


class ManualClock:
    """A clock that only moves when told (seconds)."""

    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@dataclass
class DrillResult:
    """What happened around each expiry of one hot key (the warm-up load excluded)."""

    readers_per_delta: float
    instances: int
    reads: int
    expiries: int
    loads: int
    waited_reads: int  # reads that waited for the source
    waited_expiries: int  # expiries on which at least one read waited
    lead: list[float] = field(default_factory=list)  # per expiry, in delta: first load start
    # to the old record's expiry (> 0: refreshed early; <= 0: after it expired)

    @property
    def recomputations(self) -> float:
        """Loads per expiry."""
        return self.loads / self.expiries if self.expiries else 0.0

    @property
    def share_waited(self) -> float:
        """The share of expiries on which some reader waited for the source."""
        return self.waited_expiries / self.expiries if self.expiries else 0.0

    def as_dict(self) -> dict[str, Any]:
        lead = sorted(self.lead)
        return {
            "readers per δ": self.readers_per_delta,
            "instances": self.instances,
            "reads": self.reads,
            "expiries": self.expiries,
            "recomputations per expiry": round(self.recomputations, 3),
            "expiries with a waiting reader": f"{self.share_waited:.0%}",
            "reads that waited": self.waited_reads,
            "median lead (δ)": round(lead[len(lead) // 2], 2) if lead else None,
        }


class _Source:
    """A loader whose calls each take `delta` on the drill's clock, released by the drill."""

    def __init__(self, clock: ManualClock, delta: float) -> None:
        self.clock, self.delta = clock, delta
        # Loads parked until the drill's clock reaches their end, soonest first.
        self.gates: list[tuple[float, int, asyncio.Future[None]]] = []
        self.loads: list[tuple[float, float]] = []  # (start, end) of each finished load
        self._order = itertools.count()

    async def __call__(self) -> dict[str, int]:
        start = self.clock()
        gate = asyncio.get_running_loop().create_future()
        heapq.heappush(self.gates, (start + self.delta, next(self._order), gate))
        await gate
        self.loads.append((start, self.clock()))
        return {"version": len(self.loads)}


async def expiry_drill(
    caches: Sequence[MultiLevelCache],
    clock: ManualClock,
    *,
    readers_per_delta: float,
    delta: float = 1.0,
    ttl: float = 20.0,
    expiries: int = 20,
    key: str = "hot",
    settle_timeout: float = 30.0,
) -> DrillResult:
    """Read `key` at `readers_per_delta` per `delta`, round-robin over `caches`, for `expiries`
    TTL periods. The caches must run on `clock` (MultiLevelCache(..., clock=clock)); a load
    takes `delta` of it. A DistributedLock is not supported (its waiters poll in real time).
    """
    if readers_per_delta <= 0 or delta <= 0 or ttl <= delta or expiries < 1:
        raise ValueError("need readers_per_delta > 0, delta > 0, ttl > delta and expiries >= 1")
    source = _Source(clock, delta)
    readers: set[asyncio.Task[Any]] = set()
    loop = asyncio.get_running_loop()

    def settled() -> bool:
        # Every unfinished reader waits on a load, and every load in flight waits at its gate.
        # (A gate leaves the heap when opened, so a released load counts as busy at once.)
        joined = sum(c.waiting(key) for c in caches)
        busy = len(readers) + sum(c.in_flight for c in caches)
        return busy == joined + len(source.gates)

    async def settle() -> None:
        deadline = loop.time() + settle_timeout
        while not settled():
            if loop.time() > deadline:
                raise RuntimeError("expiry_drill: the caches did not settle (a lock, or a hang?)")
            await asyncio.sleep(0)

    waited: list[float] = []
    start, spacing = clock(), delta / readers_per_delta
    reads = int((expiries * ttl + delta) * readers_per_delta)
    for i in range(reads):
        at = start + i * spacing
        while source.gates and source.gates[0][0] <= at:  # loads that finish before this read
            end, _, gate = heapq.heappop(source.gates)
            clock.now = max(clock.now, end)
            gate.set_result(None)
            await settle()
        clock.now = at
        task = loop.create_task(caches[i % len(caches)].get(key, source, ttl=ttl))
        readers.add(task)
        task.add_done_callback(readers.discard)
        await settle()
        if not task.done():
            waited.append(at)
    while source.gates:  # let the last loads land
        end, _, gate = heapq.heappop(source.gates)
        clock.now = max(clock.now, end)
        gate.set_result(None)
        await settle()
    return _tally(source.loads, waited, ttl, delta, readers_per_delta, len(caches), reads)


def _tally(
    loads: list[tuple[float, float]],
    waited: list[float],
    ttl: float,
    delta: float,
    rate: float,
    instances: int,
    reads: int,
) -> DrillResult:
    """Group the loads by the expiry they answer, and count.

    A load belongs to the current expiry if it started before that expiry's first load landed
    (until then Redis holds only the old record); a later one answers the next expiry.
    """
    groups: list[list[tuple[float, float]]] = []
    for load in sorted(loads):
        if groups and load[0] < min(end for _, end in groups[-1]):
            groups[-1].append(load)
        else:
            groups.append([load])
    result = DrillResult(rate, instances, reads, max(0, len(groups) - 1), 0, 0, 0)
    for before, group in itertools.pairwise(groups):  # the first group is the warm-up
        first_start = group[0][0]
        # The record this expiry replaces: the last one stored before its first load started.
        old_expiry = max(end for _, end in before if end <= first_start) + ttl
        last_end = max(end for _, end in group)
        result.loads += len(group)
        result.lead.append((old_expiry - first_start) / delta)
        inside = sum(first_start <= t <= last_end for t in waited)
        result.waited_reads += inside
        result.waited_expiries += inside > 0
    return result
