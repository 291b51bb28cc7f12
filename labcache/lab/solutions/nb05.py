"""The course's answers to notebook 05's exercises (monitoring and performance)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

import pandas as pd

from labcache.events import FALLBACK, HIT, MISS, STALE, CacheEvent


async def choose_policy_ttl(
    run: Callable[[int], Awaitable[pd.DataFrame]], candidates: Sequence[int], target: float
) -> int:
    """The shortest candidate TTL at which at least `target` of the policy requests are hits."""
    for ttl in sorted(candidates):  # shortest first: the first one that reaches the target wins
        frame = await run(ttl)
        policies = frame[frame["kind"] == "policy"]  # only policy requests: the TTL is theirs
        # A hit is any request a cache level answered: l1, l2 or stale; "source" is a miss.
        hit_rate = float((policies["level"] != "source").mean())
        if hit_rate >= target:
            return ttl
    raise ValueError(f"no TTL in {tuple(candidates)} reaches {target:.0%} policy hits")


def honest_tally(event: CacheEvent, tally: dict[str, int]) -> None:
    """Count every request once (hit, stale, miss, fallback); a hit only when a cache served it."""
    if event.kind in (HIT, STALE, MISS, FALLBACK):  # exactly one of these per `get`
        tally["requests"] += 1
        if event.kind in (HIT, STALE):  # stale: an expired copy, but the cache answered
            tally["hits"] += 1
    # load, set, error, evict, ... describe what the cache did, not how a request was answered.
