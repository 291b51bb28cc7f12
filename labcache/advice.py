"""Part 5's advice: the lab's four checks on what a monitor measured, each with its numbers.

Low hit rate, high p99 latency, cache errors and a nearly full L1; each finding names the value
that crossed its threshold and what to try, so a notebook can print it as it is.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from labcache.events import SOURCE
from labcache.latency import LatencyHistogram, merged


@dataclass(frozen=True)
class Recommendation:
    """One finding: what was measured, the threshold it crossed, and what to try."""

    kind: str
    value: float
    threshold: float
    message: str

    def __str__(self) -> str:
        return self.message


class Measured(Protocol):
    """What the checks read: a `CacheMonitor`'s totals (levels in `latency` in table order)."""

    @property
    def served(self) -> Counter[str]: ...

    @property
    def latency(self) -> Mapping[str, LatencyHistogram]: ...

    @property
    def errors(self) -> int: ...

    @property
    def last_error(self) -> str: ...

    @property
    def requests(self) -> int: ...

    @property
    def hit_rate(self) -> float: ...

    def l1_fill(self) -> dict[str, tuple[int, int]]: ...


def recommend(
    monitor: Measured,
    *,
    min_hit_rate: float = 0.8,
    max_p99_ms: float = 50.0,
    max_errors: int = 0,
    max_l1_fill: float = 0.9,
    min_requests: int = 20,
) -> list[Recommendation]:
    """The lab's four checks, each naming the numbers that triggered it (empty: all fine).

    Hit rate and latency need at least `min_requests` requests to say anything.
    """
    found: list[Recommendation] = []
    n = monitor.requests
    if n >= min_requests and monitor.hit_rate < min_hit_rate:
        seen = [lv for lv in monitor.latency if monitor.served[lv]]
        shares = ", ".join(f"{lv} {monitor.served[lv] / n:.0%}" for lv in seen)
        message = (
            f"Low hit rate: {monitor.hit_rate:.1%} < {min_hit_rate:.0%} over {n} requests "
            f"({shares}). Try longer TTLs, warming the hot keys, or fewer distinct keys."
        )
        found.append(Recommendation("low_hit_rate", monitor.hit_rate, min_hit_rate, message))
    p99 = merged(monitor.latency.values()).percentile(99) * 1000
    if n >= min_requests and p99 > max_p99_ms:
        seen = [lv for lv in monitor.latency if monitor.served[lv]]
        level = max(seen, key=lambda lv: monitor.latency[lv].percentile(99))
        slowest = monitor.latency[level].percentile(99) * 1000
        advice = (
            "raise the hit rate (TTLs, warming) or make the source faster"
            if level == SOURCE
            else "check the Redis round trip: network, pool, pipelining, or a larger L1"
        )
        message = (
            f"High p99 latency: {p99:.1f} ms > {max_p99_ms:g} ms; the slowest level is "
            f"{level} (p99 {slowest:.1f} ms, {monitor.served[level] / n:.0%} of requests): "
            f"{advice}."
        )
        found.append(Recommendation("high_latency", p99, max_p99_ms, message))
    if monitor.errors > max_errors:
        message = (
            f"{monitor.errors} cache errors (more than {max_errors}); last: {monitor.last_error}. "
            "Check Redis connectivity and what the cache does when Redis fails."
        )
        found.append(Recommendation("errors", monitor.errors, max_errors, message))
    for name, (used, size) in monitor.l1_fill().items():
        fill = used / size if size else 0.0
        if fill >= max_l1_fill:
            message = (
                f"L1 of {name!r} is {fill:.0%} full ({used}/{size}; threshold "
                f"{max_l1_fill:.0%}): hot keys may be evicted; raise l1_maxsize if the L1 "
                "share of hits drops."
            )
            found.append(Recommendation("l1_full", fill, max_l1_fill, message))
    return found
