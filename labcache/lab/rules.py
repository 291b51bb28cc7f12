"""The lab's invalidation rules: its four events and which cache entries each makes wrong.

Tags are the vocabulary the course caches with: an entry derived from policy P carries tag
`policy:P`, from customer C `customer:C`, from quote Q `quote:Q`, and every leaderboard
`leaderboard`. `Invalidator(cache, rules=LAB_RULES)` runs them.
"""

from __future__ import annotations

from typing import Any

from labcache.invalidation import Rule, Targets

# The lab's four events.
POLICY_UPDATED = "policy.updated"
CUSTOMER_UPDATED = "customer.updated"
QUOTE_EXPIRED = "quote.expired"
AGENT_STATS_CHANGED = "agent.stats.changed"


def _ident(event: str, name: str, value: object) -> str:
    """An id from a payload, as text; a clear error for a missing or odd one."""
    if isinstance(value, bool) or not isinstance(value, (str, int)) or value == "":
        raise ValueError(f"{event}: {name} must be a non-empty str or int, not {value!r}")
    return str(value)


def policy_updated(*, policy_id: object, customer_id: object = None, **_: Any) -> Targets:
    """The policy, everything tagged with it, and its holder's list of policies."""
    pid = _ident(POLICY_UPDATED, "policy_id", policy_id)
    targets = Targets(keys=[f"policy:{pid}"], tags=[f"policy:{pid}"])
    if customer_id is not None:
        cid = _ident(POLICY_UPDATED, "customer_id", customer_id)
        targets.keys.append(f"customer:{cid}:policies")
    return targets


def customer_updated(*, customer_id: object, **_: Any) -> Targets:
    """The customer and everything tagged with them (their policies, quotes): no `customer:*`."""
    cid = _ident(CUSTOMER_UPDATED, "customer_id", customer_id)
    return Targets(keys=[f"customer:{cid}"], tags=[f"customer:{cid}"])


def quote_expired(*, quote_id: object, **_: Any) -> Targets:
    """The quote and the temporary data tagged with it."""
    qid = _ident(QUOTE_EXPIRED, "quote_id", quote_id)
    return Targets(keys=[f"quote:{qid}"], tags=[f"quote:{qid}"])


def agent_stats_changed(*, agent_id: object, **_: Any) -> Targets:
    """The agent's stats and every leaderboard (by tag, not by a `leaderboard:*` walk)."""
    aid = _ident(AGENT_STATS_CHANGED, "agent_id", agent_id)
    return Targets(keys=[f"agent:stats:{aid}"], tags=["leaderboard"])


LAB_RULES: dict[str, Rule] = {
    POLICY_UPDATED: policy_updated,
    CUSTOMER_UPDATED: customer_updated,
    QUOTE_EXPIRED: quote_expired,
    AGENT_STATS_CHANGED: agent_stats_changed,
}
