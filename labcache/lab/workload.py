"""Part 5: the lab's performance test, made reusable: a seeded, open-loop request stream.

What the lab's test got wrong, and this one does not:
- `Math.random()` picked keys and kinds, so no two runs matched (mistake 15); here one seeded
  `random.Random` draws the whole sequence (`labcache.lab.stream`): the same seed gives the
  same requests;
- it recorded every request as a "hit" (mistake 8); here each request records the level that
  really served it, read from the cache's own events;
- its `setInterval` timers outlived the test (mistake 10); here every task the workload starts
  is tracked and ended by `stop()` (or when a bounded run finishes).

Open loop: request *i* is issued at its scheduled time `i / rate` (or at Poisson arrivals),
whether or not earlier requests have returned, as real users do. A closed loop ("send the next
one when the last returns") slows down exactly when the cache does and hides the slowness.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

import pandas as pd

from labcache.events import LOAD, CacheEvent, EventHub
from labcache.lab.data import InsuranceDB
from labcache.lab.stream import LAB_MIX, Request, RequestStream, lab_quote_requests
from labcache.monitor import REQUEST_KINDS, served_level
from labcache.tasks import cancel_and_wait

logger = logging.getLogger(__name__)
# The request stream lives in `labcache.lab.stream`; its names are importable from here too.
__all__ = [
    "LAB_MIX",
    "Cache",
    "Request",
    "RequestStream",
    "VirtualClock",
    "Workload",
    "lab_quote_requests",
    "summarize",
]


class Cache(Protocol):
    """What a workload needs from a cache: `get` with a TTL, and events."""

    events: EventHub

    async def get(
        self, key: str, loader: Callable[[], Awaitable[Any]], *, ttl: float | None = None
    ) -> Any: ...


def _positive(value: float, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"{name} must be a positive number, not {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, not {value!r}")
    return float(value)


@dataclass
class _Record:
    index: int
    kind: str
    key: str
    scheduled: float
    start: float = math.nan
    level: str = ""
    latency: float = math.nan
    response: float = math.nan
    source_called: bool = False
    error: str = ""
    arg: Any = None

    COLUMNS: ClassVar[tuple[str, ...]] = (
        "scheduled_s", "start_s", "kind", "key", "level", "latency_ms", "response_ms",
        "source_called", "error",
    )  # fmt: skip


class VirtualClock:
    """A clock that moves only when told: give it to a cache as `clock=` for exact TTL runs."""

    def __init__(self, start: float = 1_000_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Workload:
    """The lab's 60/30/10 policy/customer/quote traffic against a cache, open loop and seeded.

    Bounded by `requests` and/or `duration` (seconds), or unbounded until `stop()`. `rate`
    (requests/s), `skew`, `mix` and the per-kind `ttls` (seconds; a kind not in it uses the
    cache's default) can be changed while it runs. At most `max_in_flight` requests wait on the
    cache at once (more would exhaust the Redis pool); the wait counts in their latency.
    """

    def __init__(
        self,
        cache: Cache,
        db: InsuranceDB,
        *,
        rate: float = 50.0,
        requests: int | None = None,
        duration: float | None = None,
        mix: Mapping[str, float] = LAB_MIX,
        skew: float = 0.0,
        n_keys: int | None = None,
        seed: int = 0,
        ttls: Mapping[str, float] | None = None,
        arrivals: str = "fixed",
        max_in_flight: int = 256,
    ) -> None:
        if requests is not None and requests < 0:
            raise ValueError(f"requests must be >= 0, not {requests}")
        if duration is not None:
            _positive(duration, "duration")
        if arrivals not in ("fixed", "poisson"):
            raise ValueError(f"arrivals must be 'fixed' or 'poisson', not {arrivals!r}")
        self.cache = cache
        self.db = db
        self.rate = rate
        self.requests = requests
        self.duration = duration
        self.stream = RequestStream.from_db(db, n_keys=n_keys, mix=mix, skew=skew, seed=seed)
        self.ttls: dict[str, float] = {k: _positive(v, f"ttl {k}") for k, v in (ttls or {}).items()}
        self.arrivals = arrivals
        self._arrival_rng = random.Random(f"arrivals-{seed}")
        self._semaphore = asyncio.Semaphore(max_in_flight)
        self.loaders: dict[str, Callable[[Any], Awaitable[Any]]] = {
            "policy": db.get_policy,
            "customer": db.get_customer,
            "quote": db.calculate_quote,
        }
        self.records: list[_Record] = []
        self._current: ContextVar[_Record | None] = ContextVar("workload_request", default=None)
        self._generator: asyncio.Task[None] | None = None
        self._main: asyncio.Task[pd.DataFrame] | None = None
        self._in_flight: set[asyncio.Task[None]] = set()
        self._t0 = 0.0

    # -- knobs -------------------------------------------------------------------------------

    @property
    def rate(self) -> float:
        return self._rate

    @rate.setter
    def rate(self, value: float) -> None:
        self._rate = _positive(value, "rate")

    @property
    def skew(self) -> float:
        return self.stream.skew

    @skew.setter
    def skew(self, value: float) -> None:
        self.stream.skew = value

    @property
    def mix(self) -> dict[str, float]:
        return self.stream.mix

    @mix.setter
    def mix(self, value: Mapping[str, float]) -> None:
        self.stream.mix = value

    @property
    def running(self) -> bool:
        return self._main is not None and not self._main.done()

    @property
    def issued(self) -> int:
        return len(self.records)

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> asyncio.Task[pd.DataFrame]:
        """Begin issuing requests (needs a running event loop); returns the run's task."""
        if self.running:
            raise RuntimeError("this workload is already running; stop() it first")
        self.records = []
        self._generator = asyncio.create_task(self._generate(), name="labcache-workload-issue")
        self._main = asyncio.create_task(self._supervise(), name="labcache-workload")
        return self._main

    async def run(self) -> pd.DataFrame:
        """Start (unless running) and wait for the run to end; return the per-request frame."""
        if not self.running:
            self.start()
        assert self._main is not None
        return await self._main

    async def stop(self, *, drain_timeout: float = 5.0) -> pd.DataFrame:
        """Stop issuing, let in-flight requests finish (cancelling any still out after
        `drain_timeout` s), and return the frame. Nothing the workload started keeps running."""
        if self._generator is not None:
            self._generator.cancel()
        if self._main is None:
            return self.frame()
        await asyncio.wait([self._main], timeout=drain_timeout)
        await cancel_and_wait(self._in_flight)  # still out after the drain timeout
        return await self._main

    async def _supervise(self) -> pd.DataFrame:
        unsubscribe = self.cache.events.subscribe(self._on_event)
        try:
            assert self._generator is not None
            await asyncio.wait([self._generator])  # does not raise if it was cancelled
            if self._generator.done() and not self._generator.cancelled():
                self._generator.result()  # a bug in issuing surfaces here
            while self._in_flight:  # a request cancelled by stop() leaves the set too
                await asyncio.wait(set(self._in_flight))
        finally:
            await cancel_and_wait({self._generator, *self._in_flight} - {None})
            unsubscribe()
        return self.frame()

    async def _generate(self) -> None:
        loop = asyncio.get_running_loop()
        self._t0 = loop.time()
        scheduled = 0.0
        for index in itertools.count():
            if self._done(index, scheduled):
                return
            delay = self._t0 + scheduled - loop.time()
            # Sleep until the request is due; if behind schedule, issue it now (a burst).
            await asyncio.sleep(max(0.0, delay))
            record = self._record(scheduled)
            task = asyncio.create_task(self._issue(record), name=f"labcache-request-{index}")
            self._in_flight.add(task)
            task.add_done_callback(self._in_flight.discard)
            scheduled += self._gap()

    def _done(self, index: int, scheduled: float) -> bool:
        return (self.requests is not None and index >= self.requests) or (
            self.duration is not None and scheduled >= self.duration - 1e-9  # float sums drift
        )

    def _gap(self) -> float:
        if self.arrivals == "poisson":
            return self._arrival_rng.expovariate(self._rate)
        return 1.0 / self._rate

    def _record(self, scheduled: float) -> _Record:
        request = self.stream.next()
        record = _Record(request.index, request.kind, request.key, scheduled, arg=request.arg)
        self.records.append(record)
        return record

    async def _issue(self, record: _Record) -> None:
        loop = asyncio.get_running_loop()
        record.start = loop.time() - self._t0
        await self._serve(record)
        record.response = loop.time() - self._t0 - record.scheduled

    async def _serve(self, record: _Record) -> None:
        """One cache.get, timed; errors are recorded, not raised (a run goes on)."""
        self._current.set(record)  # each request runs in its own task or context copy
        arg, load = record.arg, self.loaders[record.kind]
        began = time.perf_counter()
        try:
            async with self._semaphore:
                await self.cache.get(record.key, lambda: load(arg), ttl=self.ttls.get(record.kind))
        except asyncio.CancelledError:
            record.error = "cancelled"
            raise
        except Exception as exc:
            record.error = f"{type(exc).__name__}: {exc}"
        finally:
            record.latency = time.perf_counter() - began

    def _on_event(self, event: CacheEvent) -> None:
        record = self._current.get()
        if record is None or event.key != record.key:
            return
        if event.kind in REQUEST_KINDS:
            record.level = served_level(event)
        elif event.kind == LOAD:
            record.source_called = True

    # -- a run with an injected clock -------------------------------------------------------

    async def simulate(self, clock: VirtualClock) -> pd.DataFrame:
        """Issue the requests one at a time at their scheduled times on `clock` (the cache's).

        No request overlaps another and time moves only between requests, so which level
        serves each request depends only on the seed, the TTLs and the clock: repeatable to the
        request. (Redis expires its copy in real time, PX = the TTL; a virtual second here
        passes in far less than a real one, so the cache's own expiry always comes first.)
        """
        if self.requests is None and self.duration is None:
            raise ValueError("simulate() needs requests= or duration= to end")
        if self.running:
            raise RuntimeError("this workload is already running")
        self.records = []
        begin = clock()
        unsubscribe = self.cache.events.subscribe(self._on_event)
        try:
            scheduled = 0.0
            for index in itertools.count():
                if self._done(index, scheduled):
                    break
                clock.now = begin + scheduled
                record = self._record(scheduled)
                record.start = scheduled
                await asyncio.create_task(self._serve(record))  # its own context, like a run
                record.response = record.latency
                scheduled += self._gap()
        finally:
            unsubscribe()
        return self.frame()

    # -- results -----------------------------------------------------------------------------

    def frame(self) -> pd.DataFrame:
        """One row per issued request: when, what, which level served it, how long it took."""
        rows = [
            {
                "scheduled_s": r.scheduled,
                "start_s": r.start,
                "kind": r.kind,
                "key": r.key,
                "level": r.level,
                "latency_ms": r.latency * 1000,
                "response_ms": r.response * 1000,
                "source_called": r.source_called,
                "error": r.error,
            }
            for r in self.records
        ]
        frame = pd.DataFrame(rows, columns=list(_Record.COLUMNS))
        frame.index.name = "request"
        return frame


def summarize(frame: pd.DataFrame) -> dict[str, float]:
    """Hit rate, level shares and source calls of a workload frame (counts only, no timing)."""
    n = len(frame)
    served = frame["level"].value_counts()
    out: dict[str, float] = {"requests": n}
    for level in ("l1", "l2", "stale", "source"):
        out[level] = int(served.get(level, 0))
    out["hit_rate"] = round((out["l1"] + out["l2"] + out["stale"]) / n, 4) if n else 0.0
    out["source_calls"] = int(frame["source_called"].sum())
    out["errors"] = int((frame["error"] != "").sum())
    return out
