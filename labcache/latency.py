"""Latency percentiles in constant memory: a log-bucket histogram, mergeable across intervals."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable

from labcache.validate import whole

PERCENTILES = (50, 95, 99)


class LatencyHistogram:
    """Log-spaced latency buckets: constant memory, O(1) per record, mergeable per interval.

    Why a histogram and not a reservoir: it keeps every sample's contribution (a reservoir forgets
    the rare slow requests that make the p99), costs one `log10` and a dict increment per
    request, and two histograms add up, so per-interval ones give the run's totals exactly.
    With 50 buckets per decade a percentile is reported as its bucket's geometric middle, within
    ±2.3% of the true sample (nearest-rank definition); `min`/`max` are exact.
    """

    __slots__ = ("buckets", "count", "max", "min", "per_decade", "total")

    def __init__(self, per_decade: int = 50) -> None:
        whole(per_decade, "per_decade")
        self.per_decade = per_decade
        self.buckets: Counter[int] = Counter()
        self.count = 0
        self.total = 0.0
        self.min = math.inf
        self.max = 0.0

    def record(self, seconds: float) -> None:
        seconds = max(seconds, 1e-9)  # a 0 s duration (a clock tick) goes to the lowest bucket
        self.buckets[math.floor(math.log10(seconds) * self.per_decade)] += 1
        self.count += 1
        self.total += seconds
        self.min = min(self.min, seconds)
        self.max = max(self.max, seconds)

    def merge(self, other: LatencyHistogram) -> None:
        if other.per_decade != self.per_decade:
            raise ValueError("cannot merge histograms with different bucket widths")
        self.buckets.update(other.buckets)
        self.count += other.count
        self.total += other.total
        self.min = min(self.min, other.min)
        self.max = max(self.max, other.max)

    @property
    def mean(self) -> float:
        return self.total / self.count if self.count else math.nan

    def percentile(self, p: float) -> float:
        """The nearest-rank p-th percentile in seconds (NaN when empty)."""
        if not 0 <= p <= 100:
            raise ValueError(f"percentile must be within 0..100, not {p}")
        if not self.count:
            return math.nan
        if p == 100:
            return self.max
        rank = max(1, math.ceil(p / 100 * self.count))
        seen = 0
        for index in sorted(self.buckets):
            seen += self.buckets[index]
            if seen >= rank:
                middle = 10 ** ((index + 0.5) / self.per_decade)
                return min(max(middle, self.min), self.max)
        return self.max  # unreachable: the counts add up to self.count

    def summary_ms(self) -> dict[str, float]:
        """p50/p95/p99/max/mean in milliseconds."""
        out = {f"p{p}_ms": self.percentile(p) * 1000 for p in PERCENTILES}
        out["max_ms"] = self.max * 1000 if self.count else math.nan
        out["mean_ms"] = self.mean * 1000
        return out


def merged(histograms: Iterable[LatencyHistogram]) -> LatencyHistogram:
    """One histogram holding all the samples of several."""
    out = LatencyHistogram()
    for histogram in histograms:
        out.merge(histogram)
    return out
