"""Notebook 05's exercise checks: choosing a policy TTL, and counting hits honestly."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

import pandas as pd
import redis.asyncio as aioredis

from labcache.breaker import CircuitBreaker
from labcache.events import CacheEvent
from labcache.lab.data import InsuranceDB
from labcache.lab.workload import VirtualClock
from labcache.monitor import CacheMonitor
from labcache.multilevel import Guard, MultiLevelCache, Staleness

CANDIDATES = (2, 5, 10, 20, 40, 80)
"""Exercise 1's policy TTLs (s), tried on the notebook's `scenario` runs."""


def policy_hits(frame: pd.DataFrame) -> float:
    """The share of a run's policy requests that a cache level served (l1, l2 or stale)."""
    policies = frame[frame["kind"] == "policy"]
    return float((policies["level"] != "source").mean())


def made_up_frame(policy_levels: dict[str, int], customer_hits: int) -> pd.DataFrame:
    """100 policy requests served as given (the rest by the source), then 100 customer requests
    of which `customer_hits` hit L2."""
    levels = [lv for lv, n in policy_levels.items() for _ in range(n)]
    levels += ["source"] * (100 - len(levels))
    levels += ["l2"] * customer_hits + ["source"] * (100 - customer_hits)
    return pd.DataFrame(
        {
            "kind": ["policy"] * 100 + ["customer"] * 100,
            "level": levels,
            "source_called": [lv == "source" for lv in levels],
        }
    )


def made_up_runs() -> dict[int, pd.DataFrame]:
    """Made-up runs (TTL -> frame): policies reach 60% first at 12 s, counting L1, L2 and stale
    hits; customers hit often, so counting every request would pick 3 s."""
    return {
        3: made_up_frame({"l2": 30}, 95),
        6: made_up_frame({"l1": 10, "l2": 20, "stale": 20}, 90),
        12: made_up_frame({"l1": 10, "l2": 26, "stale": 26}, 90),
        24: made_up_frame({"l1": 20, "l2": 40, "stale": 20}, 90),
        48: made_up_frame({"l1": 30, "l2": 65}, 90),
    }


Run = Callable[[int], Awaitable[pd.DataFrame]]


async def check_choose_policy_ttl(
    choose_policy_ttl: Callable[[Run, tuple[int, ...], float], Awaitable[Any]],
    scenario: Callable[..., Awaitable[tuple[pd.DataFrame, Any]]],
) -> str:
    """Exercise 1's check: the student's TTL against the shortest that reaches the target.

    Twice: on the notebook's `scenario` runs (skew 1.0, default TTL 10 s, each policy TTL run
    once) with target 70%, and on made-up frames whose answer is known, with target 60%.
    """
    measured: dict[int, pd.DataFrame] = {}
    made_up = made_up_runs()

    async def sweep_run(ttl: int) -> pd.DataFrame:
        if ttl not in measured:
            measured[ttl] = (await scenario(10, 1.0, ttls={"policy": ttl}))[0]
        return measured[ttl].copy()

    async def made_up_run(ttl: int) -> pd.DataFrame:
        return made_up[ttl].copy()

    problems, chosen = [], []
    trials: list[tuple[str, Run, tuple[int, ...], float]] = [
        ("the scenario's runs", sweep_run, CANDIDATES, 0.7),
        ("made-up runs", made_up_run, tuple(made_up), 0.6),
    ]
    for name, run, candidates, target in trials:
        answer = await choose_policy_ttl(run, candidates, target)
        rates = {ttl: policy_hits(await run(ttl)) for ttl in candidates}
        expected = min(ttl for ttl, rate in rates.items() if rate >= target)
        shown = ", ".join(f"{ttl} s: {rate:.1%}" for ttl, rate in rates.items())
        chosen.append(f"{answer} s on {name} ({shown})")
        if answer != expected:
            problems.append(
                f"with {name} and target {target:.0%} you chose {answer!r}; the policy hit rates "
                f"({shown}) make {expected} s the shortest that reaches it (count only policy "
                "requests, and every level but the source as a hit)"
            )
    if problems:
        return "FAIL:\n  - " + "\n  - ".join(problems)
    return "PASS: the shortest policy TTL that reaches the target: " + "; ".join(chosen)


async def check_honest_tally(
    honest_tally: Callable[[CacheEvent, dict[str, int]], Any],
    redis: aioredis.Redis,
    namespace: str,
    db: InsuranceDB,
) -> str:
    """Exercise 2's check: the student's tally against `CacheMonitor`, part by part.

    Three caches under `namespace` + "ex2:": 30 cold keys, then the same from memory and from
    Redis; 10 expired entries served stale while the source is down (a virtual clock, moved by
    hand); 10 reads while the circuit breaker is open (the source answers directly). `db`
    should answer at once. The check deletes its keys, whatever happened.
    """
    tally = {"requests": 0, "hits": 0}
    reference = CacheMonitor()
    clock = VirtualClock()
    caches: list[MultiLevelCache] = []
    raised: list[Exception] = []

    def listener(event: CacheEvent) -> None:
        try:
            honest_tally(event, tally)
        except Exception as exc:  # a cache keeps going when a listener fails: keep it for later
            raised.append(exc)

    def watched(**options: Any) -> MultiLevelCache:
        c = MultiLevelCache(redis, backplane=False, **options)
        reference.attach(c)
        c.events.subscribe(listener)
        caches.append(c)
        return c

    async def source_down() -> Any:
        raise RuntimeError("the database is down")

    problems: list[str] = []
    before = {"requests": 0, "hits": 0}  # the student's tally after the previous part
    before_monitor = [0, 0]  # CacheMonitor's requests and hits after the previous part

    def compare(part: str, what: str) -> None:
        # This part's requests and hits: the student's against CacheMonitor's.
        if raised:
            raise raised[0]
        yours = (tally["requests"] - before["requests"], tally["hits"] - before["hits"])
        theirs = (reference.requests - before_monitor[0], reference.hits - before_monitor[1])
        if yours != theirs:
            problems.append(
                f"{part} ({what}): your tally counted {yours[0]} requests and {yours[1]} hits; "
                f"CacheMonitor counts {theirs[0]} requests, {theirs[1]} hits"
            )
        before.update(tally)
        before_monitor[:] = [reference.requests, reference.hits]

    try:
        ids = db.policy_ids()[:30]
        fresh = watched(namespace=namespace + "ex2:fresh:")
        await fresh.invalidate_pattern("*")
        for part, what in (("cold", "misses"), ("L1", "memory hits"), ("L2", "Redis hits")):
            if part == "L2":
                fresh.clear_l1()
            for p in ids:
                await fresh.get(f"policy:{p}", partial(db.get_policy, p))
            compare(f"the {part} pass", what)

        stale = watched(
            namespace=namespace + "ex2:stale:", clock=clock, staleness=Staleness(grace=300)
        )
        await stale.invalidate_pattern("*")
        for p in ids[:10]:
            await stale.get(f"policy:{p}", partial(db.get_policy, p), ttl=60)
        clock.advance(61)  # past the TTL, within grace; the refreshes fail
        for p in ids[:10]:
            await stale.get(f"policy:{p}", source_down, ttl=60)
        await stale.loads.refreshes.join()
        compare(
            "the stale part", "10 loads, then 10 expired copies served while the source was down"
        )

        breaker = CircuitBreaker(failure_threshold=1, clock=clock)  # the clock stands still: open
        breaker.failure(ConnectionError("Redis is unreachable (simulated)"))
        down = watched(namespace=namespace + "ex2:down:", guard=Guard(breaker=breaker))
        for p in ids[:10]:
            await down.get(f"policy:{p}", partial(db.get_policy, p))
        compare("the fallback part", "10 reads answered by the source while Redis was unreachable")
    finally:  # the check's keys go, whatever happened
        reference.detach()
        for c in caches[:2]:
            await c.invalidate_pattern("*")
    provoked = {kind: reference.counts[kind] for kind in ("stale", "fallback")}
    if provoked != {"stale": 10, "fallback": 10}:  # the check's own premise
        problems.append(
            f"the caches emitted {provoked} events; the check needs 10 of each: re-run its cell"
        )
    if problems:
        return "FAIL:\n  - " + "\n  - ".join(problems)
    return (
        f"PASS: {reference.requests} requests and {reference.hits} hits, part by part the same as "
        "CacheMonitor: misses, L1 and L2 hits, stale hits and fallbacks."
    )
