"""The lab's warm plans: which key prefix and which TTLs each of its data types is warmed with."""

from __future__ import annotations

from labcache.connection import Settings
from labcache.warming import WarmPlan

# The lab's key prefixes and memory TTLs (5/3/10 min) per data type; Redis TTLs come from Settings.
PREFIXES = {"policy": "policy:", "customer": "customer:", "agent": "agent:stats:"}
MEMORY_TTLS = {"policy": 300, "customer": 180, "agent": 600}


def lab_plan(kind: str, settings: Settings | None = None) -> WarmPlan:
    """The lab's plan for `policy`, `customer` or `agent` (Redis TTL from Settings/.env)."""
    if kind not in PREFIXES:
        raise ValueError(f"no warm plan for {kind!r}; known kinds: {sorted(PREFIXES)}")
    ttl = (settings or Settings.from_env()).ttl_for(kind)
    return WarmPlan(kind, PREFIXES[kind], ttl, min(MEMORY_TTLS[kind], ttl))


def lab_plans(settings: Settings | None = None) -> dict[str, WarmPlan]:
    """Policies 30/5 min, customers 15/3 min, agent stats 60/10 min (Redis/memory), by default."""
    settings = settings or Settings.from_env()
    return {kind: lab_plan(kind, settings) for kind in PREFIXES}
