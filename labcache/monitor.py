"""Part 5: watch caches through their events: hit rates, latency percentiles, loads, errors.

What the lab's monitor got wrong, and this one does not:
- it recorded every finished request as a "hit", so its hit rate was 100% by construction
  (mistake 8); here only a HIT (or STALE) event is a hit, and a MISS or FALLBACK is not;
- its requests/s divided by a whole-second runtime that is 0 for the first second (mistake 9);
  here a zero elapsed time gives a rate of 0.0, never inf or ZeroDivisionError;
- its reporting timer was never stopped (mistake 10); a monitor starts no task at all: it is a
  listener, updated synchronously by each event, and `detach()` removes it;
- it reported the mean latency only; here p50/p95/p99/max come from a histogram per level.
"""

from __future__ import annotations

import math
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from labcache.advice import Recommendation, recommend
from labcache.events import ERROR, FALLBACK, HIT, LOAD, MISS, SOURCE, STALE, CacheEvent, EventHub
from labcache.latency import PERCENTILES, LatencyHistogram, merged
from labcache.optional import pandas
from labcache.validate import positive_seconds, whole

if TYPE_CHECKING:  # pandas is the course extra's: imported only where a table is asked for
    import pandas as pd

# Event kinds that answer a request: exactly one of these per `get`.
REQUEST_KINDS = frozenset({HIT, STALE, MISS, FALLBACK})
# Where a request was served from, in the order tables and plots show them.
SERVED_LEVELS = ("l1", "l2", "stale", "source")
# Public names; the histogram and the advice live in `latency` and `advice`, importable here too.
__all__ = [
    "PERCENTILES",
    "REQUEST_KINDS",
    "SERVED_LEVELS",
    "CacheMonitor",
    "LatencyHistogram",
    "Observable",
    "Recommendation",
    "merged",
    "rate",
    "served_level",
]


class Observable(Protocol):
    """Anything with an `events` hub: CacheAside, MultiLevelCache."""

    events: EventHub


def served_level(event: CacheEvent) -> str:
    """Which level answered the request this event reports: l1, l2, stale or source."""
    if event.kind == HIT:
        return event.level
    if event.kind == STALE:
        return "stale"
    return SOURCE


@dataclass
class _Interval:
    """What happened in one time slice of the series."""

    index: int
    served: Counter[str] = field(default_factory=Counter)
    latency: LatencyHistogram = field(default_factory=LatencyHistogram)
    loads: int = 0
    load_time: float = 0.0
    errors: int = 0
    row: dict[str, float] | None = None  # computed once the interval is over

    @property
    def requests(self) -> int:
        return sum(self.served.values())


def rate(count: float, seconds: float) -> float:
    """count / seconds, and 0.0 when no time has passed (the lab's version divided by 0)."""
    return count / seconds if seconds > 0 else 0.0


class CacheMonitor:
    """Per-level counts, hit rates, latency percentiles and a time series, fed by cache events.

    `clock` (seconds, monotonic by default) stamps events as they arrive, so a test can move time
    by hand. The time series has one row per `interval` seconds and keeps the last `history`
    of them; the sliding-window hit rate adds up the intervals that overlap the last `window`
    seconds (so it is exact to one interval).
    """

    def __init__(
        self,
        *caches: Observable,
        window: float = 5.0,
        interval: float = 1.0,
        history: int = 3600,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        positive_seconds(interval, "interval")
        if not (window >= interval and math.isfinite(window)):
            raise ValueError(f"window ({window!r} s) must be at least one interval ({interval} s)")
        whole(history, "history (intervals kept)")
        self.window = window
        self.interval = interval
        self.clock = clock
        self._intervals: deque[_Interval] = deque(maxlen=history)
        self._attached: dict[int, tuple[Observable, Callable[[], None]]] = {}
        self.reset()
        for cache in caches:
            self.attach(cache)

    # -- wiring ------------------------------------------------------------------------------

    def attach(self, cache: Observable) -> CacheMonitor:
        """Listen to a cache's events (attaching twice is a no-op)."""
        if id(cache) not in self._attached:
            self._attached[id(cache)] = (cache, cache.events.subscribe(self.record))
        return self

    def detach(self, cache: Observable | None = None) -> None:
        """Stop listening to one cache, or to all of them."""
        for key in [id(cache)] if cache is not None else list(self._attached):
            found = self._attached.pop(key, None)
            if found is not None:
                found[1]()

    @property
    def caches(self) -> list[Observable]:
        return [cache for cache, _ in self._attached.values()]

    def __enter__(self) -> CacheMonitor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.detach()

    def reset(self) -> None:
        """Forget everything measured; elapsed time counts from now."""
        self.started = self.clock()
        self.served: Counter[str] = Counter()
        self.counts: Counter[str] = Counter()
        self.latency = {level: LatencyHistogram() for level in SERVED_LEVELS}
        self.load_latency = LatencyHistogram()
        self.errors = 0
        self.last_error = ""
        self._intervals.clear()

    # -- recording (one call per event; keep it cheap) ---------------------------------------

    def record(self, event: CacheEvent) -> None:
        """Account for one cache event (this is the listener `attach` subscribes)."""
        kind = event.kind
        self.counts[kind] += 1
        if kind in REQUEST_KINDS:
            level = served_level(event)
            self.served[level] += 1
            self.latency[level].record(event.duration)
            bucket = self._bucket(self.clock())
            bucket.served[level] += 1
            bucket.latency.record(event.duration)
        elif kind == LOAD:
            self.load_latency.record(event.duration)
            bucket = self._bucket(self.clock())
            bucket.loads += 1
            bucket.load_time += event.duration
        elif kind == ERROR:
            self.errors += 1
            self.last_error = f"{event.key}: {event.detail}" if event.detail else event.key
            self._bucket(self.clock()).errors += 1

    def _bucket(self, now: float) -> _Interval:
        index = int((now - self.started) // self.interval)
        intervals = self._intervals
        if not intervals or index > intervals[-1].index:
            first = index if not intervals else intervals[-1].index + 1
            # A long silence adds empty intervals, but never more than the history keeps.
            for i in range(max(first, index - (intervals.maxlen or 1) + 1), index + 1):
                intervals.append(_Interval(i))
        return intervals[-1]

    # -- totals ------------------------------------------------------------------------------

    @property
    def requests(self) -> int:
        return sum(self.served.values())

    @property
    def hits(self) -> int:
        return self.served["l1"] + self.served["l2"] + self.served["stale"]

    @property
    def misses(self) -> int:
        return self.served[SOURCE]

    @property
    def hit_rate(self) -> float:
        return self.hits / self.requests if self.requests else 0.0

    @property
    def loads(self) -> int:
        return self.load_latency.count

    @property
    def elapsed(self) -> float:
        return max(0.0, self.clock() - self.started)

    @property
    def requests_per_second(self) -> float:
        return rate(self.requests, self.elapsed)

    def window_hit_rate(self, window: float | None = None) -> float:
        """Hit rate over the intervals overlapping the last `window` seconds (0.0 if idle)."""
        span = self.window if window is None else window
        first = int((self.clock() - self.started - span) // self.interval)
        hits = total = 0
        for bucket in reversed(self._intervals):
            if bucket.index < first:
                break
            total += bucket.requests
            hits += bucket.requests - bucket.served[SOURCE]
        return hits / total if total else 0.0

    def l1_fill(self) -> dict[str, tuple[int, int]]:
        """Per attached cache with an L1: (entries or bytes used, capacity)."""
        out = {}
        for cache in self.caches:
            l1 = getattr(cache, "l1", None)
            if l1 is not None:
                name = getattr(cache, "namespace", type(cache).__name__)
                out[name] = (int(l1.currsize), int(l1.maxsize))
        return out

    # -- tables ------------------------------------------------------------------------------

    def to_dataframe(self) -> pd.DataFrame:
        """One row per level that served requests (plus `all`): count, share, latency in ms."""
        pd = pandas()
        rows = {}
        total = self.requests
        for level in SERVED_LEVELS:
            if level == "stale" and not self.served[level]:
                continue  # stale serving is Part 6; keep Part 5's table to the three levels
            rows[level] = self._row(self.served[level], total, self.latency[level])
        rows["all"] = self._row(total, total, merged(self.latency.values()))
        return pd.DataFrame.from_dict(rows, orient="index").rename_axis("level")

    @staticmethod
    def _row(count: int, total: int, histogram: LatencyHistogram) -> dict[str, float]:
        return {"requests": count, "share": count / total if total else 0.0,
                **histogram.summary_ms()}  # fmt: skip

    def series(self, *, last: float | None = None, partial: bool = False) -> pd.DataFrame:
        """One row per interval (optionally only the `last` seconds): the data to plot over time.

        Columns: t_s (interval start, seconds since the monitor started), requests, requests_per_s,
        hit_rate and l1/l2/stale/source shares (NaN for an interval without requests), p50_ms,
        p99_ms, loads, source_calls_per_s, errors. The interval in progress is left out unless
        `partial`, since its rates are not known yet.
        """
        pd = pandas()
        now = self.clock()
        self._bucket(now)  # rolls the series forward through a silence
        current = int((now - self.started) // self.interval)
        first = -math.inf if last is None else current - last / self.interval
        rows = []
        for bucket in self._intervals:
            if bucket.index < first:
                continue
            if bucket.index >= current:
                if partial:
                    span = now - self.started - bucket.index * self.interval
                    rows.append(self._interval_row(bucket, span))
                continue
            if bucket.row is None:
                bucket.row = self._interval_row(bucket, self.interval)
            rows.append(bucket.row)
        columns = ["t_s", "requests", "requests_per_s", "hit_rate",
                   *(f"{level}_rate" for level in SERVED_LEVELS), "p50_ms", "p99_ms", "loads",
                   "source_calls_per_s", "errors"]  # fmt: skip
        return pd.DataFrame(rows, columns=columns)

    def _interval_row(self, bucket: _Interval, span: float) -> dict[str, float]:
        n = bucket.requests
        share = {f"{lv}_rate": bucket.served[lv] / n if n else math.nan for lv in SERVED_LEVELS}
        return {
            "t_s": bucket.index * self.interval,
            "requests": n,
            "requests_per_s": rate(n, span),
            "hit_rate": (n - bucket.served[SOURCE]) / n if n else math.nan,
            **share,
            "p50_ms": bucket.latency.percentile(50) * 1000,
            "p99_ms": bucket.latency.percentile(99) * 1000,
            "loads": bucket.loads,
            "source_calls_per_s": rate(bucket.loads, span),
            "errors": bucket.errors,
        }

    def report(self) -> dict[str, Any]:
        """Everything in one flat dict (rates as fractions, times in ms or s as named)."""
        everything = merged(self.latency.values())
        elapsed = self.elapsed
        return {
            "requests": self.requests,
            "hits": self.hits,
            "misses": self.misses,
            "hit_rate": round(self.hit_rate, 4),
            "window_hit_rate": round(self.window_hit_rate(), 4),
            "window_s": self.window,
            "l1_hits": self.served["l1"],
            "l2_hits": self.served["l2"],
            "stale_hits": self.served["stale"],
            **{k: round(v, 3) for k, v in everything.summary_ms().items()},
            "loads": self.loads,
            "load_time_s": round(self.load_latency.total, 3),
            "load_p50_ms": round(self.load_latency.percentile(50) * 1000, 3),
            "errors": self.errors,
            "elapsed_s": round(elapsed, 3),
            "requests_per_s": round(rate(self.requests, elapsed), 2),
            "source_calls_per_s": round(rate(self.loads, elapsed), 2),
            "l1_fill": {name: f"{used}/{size}" for name, (used, size) in self.l1_fill().items()},
        }

    # -- advice ------------------------------------------------------------------------------

    def recommendations(
        self,
        *,
        min_hit_rate: float = 0.8,
        max_p99_ms: float = 50.0,
        max_errors: int = 0,
        max_l1_fill: float = 0.9,
        min_requests: int = 20,
    ) -> list[Recommendation]:
        """The lab's four checks (`labcache.advice.recommend`); empty when all is fine.

        Hit rate and latency need at least `min_requests` requests to say anything.
        """
        return recommend(self, min_hit_rate=min_hit_rate, max_p99_ms=max_p99_ms,
                         max_errors=max_errors, max_l1_fill=max_l1_fill,
                         min_requests=min_requests)  # fmt: skip
