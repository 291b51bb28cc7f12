"""A failover drill on a `LocalCluster`: kill a primary mid-workload, report what callers saw.

Notebook 08 and the cluster tests run it: requests go on while the dead primary's replica takes
over, and the report counts fallbacks, errors and wrong values until its keys are hits again.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from labcache.cluster import key_slot
from labcache.lab.cluster_nodes import covers

if TYPE_CHECKING:
    from labcache.lab.local_cluster import LocalCluster

logger = logging.getLogger(__name__)
# Event kinds that say how a request was answered (the drill's outcome per request).
_OUTCOMES = {"hit", "miss", "fallback", "stale"}


@dataclass
class FailoverReport:
    """What callers saw while a primary died and its replica took over."""

    killed_port: int
    requests: int = 0  # from the kill to the first hit on the dead primary's keys
    fallbacks: int = 0  # of those, served by the loader because Redis failed
    errors: int = 0  # exceptions that reached a caller (the target is 0)
    wrong_values: int = 0
    recovery_seconds: float | None = None
    timeline: list[tuple[float, str, bool]] = field(default_factory=list)  # (s, outcome, victim)

    def __str__(self) -> str:
        recovered = "never" if self.recovery_seconds is None else f"{self.recovery_seconds:.2f} s"
        return (
            f"killed primary :{self.killed_port}; during failover {self.requests} requests, "
            f"{self.fallbacks} fallbacks, {self.errors} errors, {self.wrong_values} wrong "
            f"values; recovered in {recovered}"
        )


async def failover_drill(
    cluster: LocalCluster,
    cache: Any,
    keys: list[str],
    value_for: Callable[[str], Any],
    *,
    after: int = 100,
    pace: float = 0.005,
    timeout: float = 30.0,
    on_request: Callable[[float, str, bool], None] | None = None,
) -> FailoverReport:
    """Kill the primary of `keys[0]` mid-workload; read until its keys are hits again.

    `cache` is a MultiLevelCache (or CacheAside) on `cluster`; every key should be cached
    already. Reads skip L1, so each one reaches Redis. Recovery is the first L2 hit on a key
    the dead primary owned; `after` more requests then show the steady state.
    """
    owner = {n.port: n.slots for n in cluster.nodes() if n.role == "primary"}
    port = cluster.kill_primary(cache.key(keys[0]))
    report = FailoverReport(port)
    victims = {k for k in keys if covers(owner[port], key_slot(cache.key(k)))}
    outcomes: list[str] = []
    unsubscribe = cache.events.subscribe(
        lambda e: outcomes.append(f"{e.kind}:{e.level}") if e.kind in _OUTCOMES else None
    )
    killed_at = time.monotonic()
    try:
        for i in itertools.count():
            key = keys[i % len(keys)]
            outcomes.clear()

            async def load(key: str = key) -> Any:
                return value_for(key)

            try:
                kwargs = {"skip_memory": True} if hasattr(cache, "l1") else {}
                value = await cache.get(key, load, **kwargs)
                outcome = outcomes[-1] if outcomes else "none"
                report.wrong_values += value != value_for(key)
            except Exception as exc:  # what the drill measures: nothing should get here
                logger.warning("failover drill: %s reached the caller: %s", key, exc)
                outcome = "error"
                report.errors += 1
            now = time.monotonic() - killed_at
            report.timeline.append((now, outcome, key in victims))
            if on_request is not None:
                on_request(now, outcome, key in victims)
            if report.recovery_seconds is None:
                report.requests += 1
                report.fallbacks += outcome.startswith("fallback")
                if key in victims and outcome == "hit:l2":
                    report.recovery_seconds = now
                    stop_at = i + after
            elif i >= stop_at:
                return report
            if now > timeout:
                raise TimeoutError(f"no hit on the dead primary's keys within {timeout}s: {report}")
            await asyncio.sleep(pace)
    finally:
        unsubscribe()
    raise AssertionError("unreachable")
